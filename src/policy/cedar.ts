/**
 * The one place Writ loads cedar-wasm.
 *
 * V8 aborts the whole process ("Fatal error … unreachable code" in
 * Deoptimizer::DoComputeBuiltinContinuation) when it lazily deoptimizes an
 * optimized function that had inlined a JS→Wasm call. Cedar runs on every
 * sensitive action, so the hot path optimizes exactly such functions; seen on
 * Node 20.20 (V8 11.3) in `npm run bench`, reproducibly. Chrome shipped this
 * same flag as a kill switch for a security bug in that inlining. Turning it off
 * costs one call frame per Cedar evaluation (no measurable change in the bench)
 * and applies to the whole process, embedders included.
 */
import { setFlagsFromString } from 'node:v8';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';

setFlagsFromString('--no-turbo-inline-js-wasm-calls');

export { cedar };
export type * from '@cedar-policy/cedar-wasm/nodejs';
