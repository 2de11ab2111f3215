/**
 * `writ/verify`: verify Writ task tokens in a resource server, offline.
 * See docs/verify.md. Nothing here loads Writ's store or a database driver.
 */
export {
  createWritVerifier,
  FEED_OVERLAP_MS,
  type VerifiedTask,
  type VerifyFailureCode,
  type VerifyOutcome,
  type VerifyRefusal,
  type VerifyRequest,
  type WritVerifier,
  type WritVerifierOptions,
} from './verifier.js';
export { MAX_FEED_ENTRIES, type Revocation, type RevocationFeed } from './revocations.js';
export { bearerToken, fastifyWrit, nodeWrit, refusalResponse, verifiedTaskOf, withWrit, type RefusalResponse, type WritGuardOptions } from './middleware.js';
export type { Scope } from '../core/types.js';
export type { TaskTokenClaims, ActorClaim } from '../tokens/task-token.js';
