import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { DMI_FILES, type DmiFacts } from '../core/clouds.js';

/**
 * Longer than any SMBIOS string a cloud sets (they are tens of bytes). A value cut at the cap
 * would be a prefix, and a prefix can match a "starts with" signature it does not deserve, so
 * a longer value is dropped, not cut.
 */
export const DMI_VALUE_MAX = 256;

/** Printable ASCII only: a DMI value ends up in the audit text, and bytes outside it mean nothing here. */
const PRINTABLE = /^[\x20-\x7e]*$/;

/**
 * One DMI file's value, or undefined when it is missing, unreadable (product_uuid is root-only),
 * not a regular file, too long, empty, or not printable. Opened without following a final symlink
 * and without blocking, so a FIFO planted in a fixture directory cannot hang the agent.
 */
async function readValue(path: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    if (!(await fh.stat()).isFile()) return undefined;
    const buf = Buffer.alloc(DMI_VALUE_MAX + 2); // the value, its newline, and one byte to see it is too long
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    if (bytesRead === buf.length) return undefined; // longer than we read: not seen whole
    // latin1 maps each byte to one character, so any byte outside printable ASCII fails the test below.
    const text = buf.subarray(0, bytesRead).toString('latin1').replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
    if (text.length === 0 || text.length > DMI_VALUE_MAX || !PRINTABLE.test(text)) return undefined;
    return text;
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

/**
 * The DMI facts cloud detection needs (core/clouds DMI_FILES), read from `dir`. Never throws:
 * a host without DMI (a container, a non-x86 board) simply yields no facts, and detection
 * then says so.
 */
export async function readDmi(dir = '/sys/class/dmi/id'): Promise<DmiFacts> {
  const values = await Promise.all(DMI_FILES.map((file) => readValue(join(dir, file))));
  const facts: Record<string, string> = {};
  DMI_FILES.forEach((file, i) => {
    const value = values[i];
    if (value !== undefined) facts[file] = value;
  });
  return facts;
}
