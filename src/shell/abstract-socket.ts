import net from 'node:net';

/**
 * Names in the Linux abstract unix-socket namespace. That namespace belongs to the
 * network namespace: every process that writes a given nat table (an OpenRC service,
 * a Swarm task on the host network, an operator's shell) sees the same names, a
 * throwaway test namespace sees its own, and the kernel frees a name when the socket
 * holding it closes, however its process ended: no stale lock files.
 */

const SUN_PATH_BYTES = 108;
/** What a holder says about itself fits on one short line; anything longer is not ours. */
const MAX_ANSWER_BYTES = 512;

/**
 * The socket path for `name`, filled with dots to the whole of sun_path. libuv before
 * 1.48 (node 20) binds an abstract name with the full sun_path, NUL-padded; later ones
 * with the name's own length (libuv #4266). A name that fills sun_path is the same
 * address under both, so agents built on different node versions still meet.
 */
export function abstractPath(name: string): string {
  const room = SUN_PATH_BYTES - 1 - Buffer.byteLength(name, 'utf8');
  if (room < 0 || name.includes('\0')) throw new Error(`abstract socket name ${JSON.stringify(name)} is too long or holds a NUL`);
  return `\0${name}${'.'.repeat(room)}`;
}

export interface BoundName {
  /** Frees the name at once (connections still open are cut). */
  close(): Promise<void>;
}

/**
 * Binds `name` and answers every connection with one line, `answer()`; null when
 * another socket holds the name. The server never keeps the process alive by itself.
 */
export function bindAbstract(name: string, answer: () => string): Promise<BoundName | null> {
  const path = abstractPath(name);
  return new Promise((resolve, reject) => {
    const open = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      open.add(socket);
      socket.on('close', () => open.delete(socket));
      socket.on('error', () => {});
      let line: string;
      try {
        line = answer();
      } catch {
        line = '{}';
      }
      socket.end(`${line}\n`);
    });
    server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(null) : reject(e)));
    server.listen({ path }, () => {
      server.removeAllListeners('error');
      // Once listening, a failed accept (say EMFILE) must not end the process.
      server.on('error', () => {});
      server.unref();
      resolve({
        close: () =>
          new Promise<void>((done) => {
            // close() frees the name now; its callback waits for open connections, so cut
            // them: a client that never reads must not hold a release up.
            server.close(() => done());
            for (const s of open) s.destroy();
          }),
      });
    });
  });
}

/** Connects to `name` and reads the holder's one line; null when nobody answers a line within `timeoutMs`. */
export function askAbstract(name: string, timeoutMs: number): Promise<string | null> {
  const path = abstractPath(name);
  return new Promise((resolve) => {
    let data = '';
    let settled = false;
    const socket = net.connect({ path });
    const done = (line: string | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(line);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const nl = data.indexOf('\n');
      if (nl >= 0) done(data.slice(0, nl));
      else if (data.length > MAX_ANSWER_BYTES) done(null);
    });
    socket.on('end', () => done(null));
    socket.on('error', () => done(null));
  });
}
