/**
 * One error hierarchy. Each class carries the exit status the CLI returns for it
 * and a stable `code` callers can branch on (the way go-iptables tells "does not
 * exist" from other failures), so nothing above the adapters matches on message text.
 */
export const ExitCode = {
  ok: 0,
  /** Not protected, or drift found (report mode, audit). */
  drift: 1,
  /** Bad input, or the host could not be observed at all. */
  usage: 2,
  /** The host was observed but a change could not be applied. */
  applyFailed: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export type ErrorCode =
  | 'config-invalid'
  | 'command-missing'
  | 'permission-denied'
  | 'lock-held'
  | 'table-unavailable'
  | 'restore-failed'
  | 'command-failed'
  | 'file-failed'
  | 'listen-failed'
  | 'writer-lock-held'
  | 'another-agent';

export class ImdsGuardError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class ConfigError extends ImdsGuardError {
  constructor(message: string) {
    super(message, 'config-invalid', ExitCode.usage);
  }
}

/** A process the agent drives (iptables-save, iptables-restore, conntrack) failed. */
export class CommandError extends ImdsGuardError {
  constructor(
    message: string,
    code: Extract<ErrorCode, 'command-missing' | 'permission-denied' | 'lock-held' | 'table-unavailable' | 'restore-failed' | 'command-failed'>,
    readonly command: string,
    readonly stderr = '',
  ) {
    super(message, code, code === 'restore-failed' || code === 'lock-held' ? ExitCode.applyFailed : ExitCode.usage);
  }
}

export class FileError extends ImdsGuardError {
  constructor(message: string) {
    super(message, 'file-failed', ExitCode.applyFailed);
  }
}

/** An address the agent was told to serve on (metrics) cannot be bound: in use, or not this host's. */
export class ListenError extends ImdsGuardError {
  constructor(message: string) {
    super(message, 'listen-failed', ExitCode.usage);
  }
}

/**
 * Another imds-guard process of this network namespace (apply, remove or an agent's
 * pass) held the writer lock for longer than we were willing to wait. Nothing was read
 * or written; `holder` is what it said about itself (untrusted, already validated).
 */
export class LockHeldError extends ImdsGuardError {
  constructor(
    message: string,
    readonly holder: string,
  ) {
    super(message, 'writer-lock-held', ExitCode.applyFailed);
  }
}

/**
 * Another agent runs in this network namespace with a different configuration: two
 * agents would undo each other's rules every pass, so this one does not start. Exit 2,
 * which systemd's RestartPreventExitStatus= and a crash-looping respawn stop on.
 */
export class AgentConflictError extends ImdsGuardError {
  constructor(message: string) {
    super(message, 'another-agent', ExitCode.usage);
  }
}

export function describeError(err: unknown): string {
  if (err instanceof ImdsGuardError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}
