/** Time and timers, passed in so tests drive them with a fake clock (as Felix passes its clock). */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a monotonic scale (only differences mean anything). */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds, unless cancelled first. */
  after(ms: number, fn: () => void): Timer;
}

export const realClock: Clock = {
  now: () => performance.now(),
  after(ms, fn) {
    const t = setTimeout(fn, Math.max(0, Math.ceil(ms)));
    return { cancel: () => clearTimeout(t) };
  },
};
