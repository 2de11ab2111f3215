#!/usr/bin/env node
// The `writ` command. The TypeScript sources compile to dist/ on `npm install` (the prepare script).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('writ: dist/ is missing; run `npm run build` (npm install does this) first\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
