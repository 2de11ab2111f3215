/**
 * Throwaway policy folders for tests: a copy of the example set (or another
 * folder) with files written over it, removed when the test file ends.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/config.js';

export const EXAMPLE_POLICIES = join(PACKAGE_ROOT, 'policies');

const made: string[] = [];
// Registered when a test file imports this module: at the root, so it runs when the file ends.
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A copy of `base` (the example set by default) with `files` written over it; paths may include environments/<env>/. */
export function policyFolder(files: Record<string, string> = {}, base = EXAMPLE_POLICIES): string {
  const dir = mkdtempSync(join(tmpdir(), 'writ-policies-'));
  made.push(dir);
  cpSync(base, dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}
