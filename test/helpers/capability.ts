import type { TestContext } from 'node:test';

/**
 * Capabilities the CI machine must have (scripts/install-deps test puts them there):
 * root, the xtables lock probe, conntrack, cgroup2 and the cgroup match, a built dist/,
 * promtool, debootstrap… Outside CI a test that lacks one skips and says why; under
 * CI=true it fails with the same reason, so a broken CI machine cannot pass by skipping.
 *
 * Three forms, for the three places a test learns what it lacks:
 *   - in a test:        `if (!requireCapability(t, 'conntrack', has, 'conntrack is not installed')) return;`
 *   - a `{ skip }` option, decided when the file loads:
 *                       `{ skip: skipWithout(cap) }` plus `requireCapabilities(cap)` in the suite's
 *                       `before` (or the test): outside CI the suite skips; in CI it runs and fails there.
 *   - `capability(name, present, why)` names one, for the two above.
 */
export interface Capability {
  readonly name: string;
  readonly present: boolean;
  /** Why it is missing, as the skip reason and the failure message say it. */
  readonly why: string;
}

/** CI sets CI=true (.ci/run); so does GitHub Actions. */
export function inCi(): boolean {
  return process.env.CI === 'true';
}

export function capability(name: string, present: boolean, why: string): Capability {
  return { name, present, why };
}

function reason(c: Capability): string {
  return `${c.name}: ${c.why}`;
}

/** The failure a missing capability is under CI=true. */
export class MissingCapabilityError extends Error {
  constructor(readonly capability: Capability) {
    super(`${reason(capability)} (CI=true: the CI machine must have it; bash scripts/install-deps test)`);
    this.name = 'MissingCapabilityError';
  }
}

/**
 * Inside a test: true when the capability is there. Otherwise, outside CI, skips the
 * test with the reason and returns false (the caller returns); under CI=true, throws.
 */
export function requireCapability(t: TestContext, name: string, present: boolean, why: string): boolean {
  const c = capability(name, present, why);
  if (c.present) return true;
  if (inCi()) throw new MissingCapabilityError(c);
  t.skip(reason(c));
  return false;
}

/**
 * For a `{ skip }` option: the first missing capability's reason outside CI, else false.
 * Under CI=true always false, so the test runs; pair it with requireCapabilities.
 */
export function skipWithout(...caps: readonly Capability[]): string | false {
  const missing = caps.find((c) => !c.present);
  return missing === undefined || inCi() ? false : reason(missing);
}

/** Throws for the first missing capability (under CI=true, the failure skipWithout defers to). */
export function requireCapabilities(...caps: readonly Capability[]): void {
  const missing = caps.find((c) => !c.present);
  if (missing !== undefined) throw new MissingCapabilityError(missing);
}
