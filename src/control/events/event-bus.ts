// Persists events with a sequence number and fans them out to live subscribers (the WebSocket streams).
// Publishing is serialised in this process so its own events reach subscribers in ascending order. With
// several nodes on one PostgreSQL, each insert also NOTIFYs its seq; the other nodes fetch those rows
// and deliver them too, so a browser connected to any node sees every node's events. Events of
// different nodes may then arrive out of seq order: consumers deduplicate by seq, not by "seq > last".
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

export const EVENTS_CHANNEL = 'thicket_events';
/** How many recent seqs are remembered to tell our own and already-delivered events apart. */
const REMEMBERED_SEQS = 16_384;
/** Seqs before the highest delivered one that a catch-up after a lost LISTEN looks at again. */
const LOST_MARGIN = 1000;

export class EventBus {
  #db: Kysely<Database>;
  #repo = new EventRepository();
  #listeners = new Set<EventListener>();
  #tail: Promise<unknown> = Promise.resolve();
  #log: (err: unknown) => void;
  #notify = false;
  /** Seqs delivered to listeners (ours and other nodes'), oldest first. */
  #delivered = new Set<number>();
  #highest = 0;
  #remoteQueue: number[] = [];
  #remoteTimer: NodeJS.Timeout | undefined;
  #lostAt: number | undefined;

  constructor(db: Kysely<Database>, log: (err: unknown) => void = () => {}) {
    this.#db = db;
    this.#log = log;
  }

  publish(type: string, data: Record<string, unknown>): Promise<ThicketEvent> {
    const next = this.#tail.then(async () => {
      const row = this.#notify ? await this.#repo.insertAndNotify(this.#db, type, data, EVENTS_CHANNEL) : await this.#repo.insert(this.#db, type, data);
      const event = toThicketEvent(row);
      this.#deliver(event);
      return event;
    });
    this.#tail = next.catch(() => {});
    return next;
  }

  /** Like publish, but a failure to record the event is logged instead of failing the caller. */
  emit(type: string, data: Record<string, unknown>): void {
    this.publish(type, data).catch(this.#log);
  }

  #deliver(event: ThicketEvent): void {
    if (this.#delivered.has(event.seq)) return;
    this.#delivered.add(event.seq);
    if (this.#delivered.size > REMEMBERED_SEQS) this.#delivered.delete(this.#delivered.values().next().value!);
    this.#highest = Math.max(this.#highest, event.seq);
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch (err) {
        this.#log(err);
      }
    }
  }

  /** From now on inserts NOTIFY other nodes (PostgreSQL only). */
  enableNotify(): void {
    this.#notify = true;
  }

  /** Another node published `seq` (a NOTIFY payload). Fetched in small batches, delivered in seq order. */
  remoteSeq(payload: string): void {
    const seq = Number(payload);
    if (!Number.isSafeInteger(seq) || this.#delivered.has(seq)) return;
    this.#remoteQueue.push(seq);
    this.#remoteTimer ??= setTimeout(() => {
      this.#remoteTimer = undefined;
      const seqs = this.#remoteQueue.splice(0);
      this.#tail = this.#tail.then(async () => {
        for (const row of await this.#repo.bySeqs(this.#db, seqs)) this.#deliver(toThicketEvent(row));
      }).catch(this.#log);
    }, 2);
  }

  /** The LISTEN connection was lost: remember where to catch up from (see catchUp). */
  listenLost(): void {
    // Our own publishes keep raising #highest while other nodes' notifications are missed, so the
    // catch-up must start from here, not from wherever #highest is by then. A margin covers other
    // nodes' events still on their way when the connection dropped.
    this.#lostAt ??= Math.max(0, this.#highest - LOST_MARGIN);
  }

  /** After the LISTEN connection came back: deliver whatever other nodes published meanwhile. */
  catchUp(): void {
    const from = this.#lostAt ?? this.#highest;
    this.#lostAt = undefined;
    this.#tail = this.#tail.then(async () => {
      for (let page = 0, cursor = from; page < 1000; page++) {
        const rows = await this.#repo.since(this.#db, cursor, 1000);
        for (const row of rows) this.#deliver(toThicketEvent(row));
        if (rows.length < 1000) break;
        cursor = Number(rows[rows.length - 1].seq);
      }
    }).catch(this.#log);
  }

  subscribe(listener: EventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The highest seq recorded (0: none). */
  latestSeq(): Promise<number> {
    return this.#repo.latestSeq(this.#db);
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
