import type { Config } from './config.js';
import type { GuardSpec } from './desired.js';
import type { PlanPolicy } from './plan.js';

/** What one pass needs from the configuration, taken once at the top (core functions never see Config). */
export function guardSpecOf(config: Config): GuardSpec {
  return { endpoints: config.endpoints, targets: { ipv4: config.target, ipv6: config.target6 }, allow: config.allow };
}

export function planPolicyOf(config: Config): PlanPolicy {
  return {
    allow: config.allow,
    notCoverable: config.notCoverable,
    bootScript: config.bootScript,
    bootScriptDir: config.bootScriptDir,
    openrcRoot: config.openrcRoot,
    enableLocalService: config.enableLocalService,
  };
}
