import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, rename, rm, stat, symlink, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FileError } from '../errors.js';

export interface FileFacts {
  readonly content: string;
  readonly mode: number;
}

/** The files imds-guard reads and writes: the boot script, the state file, OpenRC's runlevel link. */
export interface FilesPort {
  read(path: string): Promise<FileFacts | null>;
  /** Temp file in the same directory, fsync, rename, fsync the directory: a reader sees the old file or the new one. */
  writeAtomic(path: string, content: string, mode: number): Promise<void>;
  remove(path: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  /** Creates `link` pointing at `target` unless something is there already. */
  ensureSymlink(target: string, link: string): Promise<void>;
}

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

export const files: FilesPort = {
  async read(path) {
    try {
      const [content, s] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
      return { content, mode: s.mode & 0o7777 };
    } catch (e) {
      if (errnoOf(e) === 'ENOENT' || errnoOf(e) === 'ENOTDIR') return null;
      throw new FileError(`cannot read ${path}: ${(e as Error).message}`);
    }
  },
  async writeAtomic(path, content, mode) {
    const dir = dirname(path);
    const tmp = join(dir, `.${process.pid}.${Date.now()}.imds-guard.tmp`);
    try {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
      try {
        await fh.writeFile(content);
        await fh.chmod(mode); // the umask may have taken bits away
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
      const dh = await open(dir, constants.O_RDONLY);
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw new FileError(`cannot write ${path}: ${(e as Error).message}`);
    }
  },
  async remove(path) {
    await rm(path, { force: true });
  },
  async exists(path) {
    try {
      await lstat(path);
      return true;
    } catch {
      return false;
    }
  },
  async ensureSymlink(target, link) {
    try {
      await mkdir(dirname(link), { recursive: true });
      await symlink(target, link);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw new FileError(`cannot link ${link} -> ${target}: ${(e as Error).message}`);
    }
  },
};
