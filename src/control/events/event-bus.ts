// Persists events with a sequence number and fans them out to live subscribers (the WebSocket streams).
// Publishing is serialised in this process so subscribers see sequence numbers in ascending order.
import type { Kysely } from 'kysely';
import type { Database, EventRow } from '../../db/schema.ts';
import { EventRepository } from '../../db/repositories/event.repository.ts';

export interface ThicketEvent {
  seq: number;
  type: string;
  at: string;
  [field: string]: unknown;
}

export type EventListener = (event: ThicketEvent) => void;

export function toThicketEvent(row: EventRow): ThicketEvent {
  return { ...(row.data as Record<string, unknown>), seq: Number(row.seq), type: row.type, at: new Date(row.at).toISOString() };
}

export class EventBus {
  #db: Kysely<Database>;
  #repo = new EventRepository();
  #listeners = new Set<EventListener>();
  #tail: Promise<unknown> = Promise.resolve();
  #log: (err: unknown) => void;

  constructor(db: Kysely<Database>, log: (err: unknown) => void = () => {}) {
    this.#db = db;
    this.#log = log;
  }

  publish(type: string, data: Record<string, unknown>): Promise<ThicketEvent> {
    const next = this.#tail.then(async () => {
      const row = await this.#repo.insert(this.#db, type, data);
      const event = toThicketEvent(row);
      for (const listener of this.#listeners) {
        try {
          listener(event);
        } catch (err) {
          this.#log(err);
        }
      }
      return event;
    });
    this.#tail = next.catch(() => {});
    return next;
  }

  /** Like publish, but a failure to record the event is logged instead of failing the caller. */
  emit(type: string, data: Record<string, unknown>): void {
    this.publish(type, data).catch(this.#log);
  }

  subscribe(listener: EventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async since(seq: number, limit: number): Promise<ThicketEvent[]> {
    const rows = await this.#repo.since(this.#db, seq, limit);
    return rows.map(toThicketEvent);
  }

  /** Waits until every publish issued so far has been recorded and delivered. */
  async settled(): Promise<void> {
    await this.#tail;
  }

  prune(keep: number): Promise<void> {
    return this.#repo.prune(this.#db, keep);
  }
}
