/**
 * writ/verify verifiers pointed at a test Writ (its JWKS and revocation feed),
 * polling slowly so that a test pulls when it means to; closed together.
 */
import { createWritVerifier, type WritVerifier, type WritVerifierOptions } from '../../src/verify/index.js';
import type { Harness } from './harness.js';

export interface TestVerifiers {
  /** A verifier for the harness, with `overrides`. */
  readonly create: (overrides?: Partial<WritVerifierOptions>) => WritVerifier;
  /** Closes every verifier made. */
  closeAll(): void;
}

/** `harness` is read when a verifier is made (it may start after this is called). */
export function testVerifiers(harness: () => Harness): TestVerifiers {
  const made: WritVerifier[] = [];
  return {
    create(overrides = {}) {
      const h = harness();
      const verifier = createWritVerifier({
        issuer: h.writ.config.issuer,
        audience: h.writ.config.tokens.audience,
        jwksUrl: `${h.url}/.well-known/jwks.json`,
        revocationsUrl: `${h.url}/v1/revocations`,
        pollIntervalMs: 60_000,
        ...overrides,
      });
      made.push(verifier);
      return verifier;
    },
    closeAll() {
      for (const verifier of made.splice(0)) verifier.close();
    },
  };
}
