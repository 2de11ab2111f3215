/**
 * Fan-out of the events every enforcement point must act on at once: today, a
 * task ended (so its token is refused). In-process today; the cluster transport
 * (PostgreSQL LISTEN/NOTIFY) and policy reloads publish into the same bus.
 */
import type { TaskState } from '../core/types.js';

export type WritEvent =
  | {
      readonly type: 'task.ended';
      readonly taskId: string;
      /** Undefined when the end was read from another node's record of it. */
      readonly state?: TaskState;
      /** When the task's token would have expired anyway (epoch ms). */
      readonly expiresAt: number;
    }
  | {
      /** A renewal replaced the task's token `jti` (here or on another node): refused from now on. */
      readonly type: 'token.superseded';
      readonly taskId: string;
      readonly jti: string;
      /** When the replaced token would have expired anyway (epoch ms). */
      readonly expiresAt: number;
    }
  | {
      /** A policy change narrowed the task's grant (here or on another node): it keeps fewer scopes than its token names. */
      readonly type: 'task.narrowed';
      readonly taskId: string;
    };

export type EventHandler = (event: WritEvent) => void;

export interface EventBus {
  /** Delivers `event` to every subscriber before returning. A failing handler does not stop the others. */
  publish(event: WritEvent): void;
  /** Returns a function that unsubscribes. */
  subscribe(handler: EventHandler): () => void;
}

export function createEventBus(onHandlerError?: (error: unknown, event: WritEvent) => void): EventBus {
  const handlers = new Set<EventHandler>();
  return {
    publish(event) {
      for (const handler of handlers) {
        try {
          handler(event);
        } catch (error) {
          onHandlerError?.(error, event);
        }
      }
    },
    subscribe(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
  };
}
