// One WebSocket to /api/v1/events for the whole page. After a lost connection it reconnects with
// ?since=<last seq seen>, and the server replays what was missed, so listeners see every event once.
// Before the first event there is no seq to resume from: listeners are told to reload instead.
import type { ThicketEvent } from './types.ts';

type Listener = (event: ThicketEvent) => void;
export type StreamStatus = 'connecting' | 'live' | 'reconnecting' | 'stopped';

const MAX_BACKOFF_MS = 5000;
const SEEN_REMEMBERED = 16_384;
const RESUME_MARGIN = 500;

export class EventClient {
  #ws: WebSocket | undefined;
  #lastSeq: number | undefined;
  #firstSeq: number | undefined;
  #seen = new Set<number>();
  #listeners = new Set<Listener>();
  #resyncListeners = new Set<() => void>();
  #statusListeners = new Set<(s: StreamStatus) => void>();
  #status: StreamStatus = 'stopped';
  #backoff = 250;
  #timer: number | undefined;
  #wanted = false;

  get status(): StreamStatus {
    return this.#status;
  }

  start(): void {
    if (this.#wanted) return;
    this.#wanted = true;
    this.#connect();
  }

  stop(): void {
    this.#wanted = false;
    clearTimeout(this.#timer);
    this.#ws?.close();
    this.#ws = undefined;
    this.#lastSeq = undefined;
    this.#firstSeq = undefined;
    this.#seen.clear();
    this.#setStatus('stopped');
  }

  subscribe(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Called after a reconnect that could not resume from a known seq: reload state from the API. */
  onResync(listener: () => void): () => void {
    this.#resyncListeners.add(listener);
    return () => this.#resyncListeners.delete(listener);
  }

  onStatus(listener: (s: StreamStatus) => void): () => void {
    this.#statusListeners.add(listener);
    return () => this.#statusListeners.delete(listener);
  }

  #setStatus(s: StreamStatus): void {
    this.#status = s;
    for (const l of this.#statusListeners) l(s);
  }

  #connect(): void {
    const resumed = this.#lastSeq !== undefined;
    const url = new URL('/api/v1/events', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Resume a little before the highest seq seen: with several nodes, an event with a lower seq can
    // still have been on its way; the seen set drops the repeats.
    // Never below the first event this page saw: older ones predate what the page loaded, and replaying
    // them would put back states that have changed since.
    if (resumed) url.searchParams.set('since', String(Math.max(this.#firstSeq! - 1, this.#lastSeq! - RESUME_MARGIN, 0)));
    this.#setStatus(this.#status === 'stopped' ? 'connecting' : 'reconnecting');
    const ws = new WebSocket(url);
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.#backoff = 250;
      this.#setStatus('live');
      // Without a seq to resume from, whatever happened before this socket opened (also between a page's
      // first load and now) can only be had by reloading.
      if (!resumed) for (const l of this.#resyncListeners) l();
    };
    ws.onmessage = (msg) => {
      let event: ThicketEvent;
      try {
        event = JSON.parse(String(msg.data)) as ThicketEvent;
      } catch {
        return;
      }
      if (typeof event.seq !== 'number' || this.#seen.has(event.seq)) return;
      // Nodes sharing a database interleave their events: dedupe by seq, resume from the highest.
      this.#seen.add(event.seq);
      if (this.#seen.size > SEEN_REMEMBERED) this.#seen.delete(this.#seen.values().next().value!);
      this.#lastSeq = Math.max(this.#lastSeq ?? 0, event.seq);
      this.#firstSeq ??= event.seq;
      for (const l of this.#listeners) {
        try {
          l(event);
        } catch (err) {
          console.error('event listener failed', err);
        }
      }
    };
    ws.onclose = () => {
      if (this.#ws !== ws || !this.#wanted) return;
      this.#setStatus('reconnecting');
      // A refused upgrade (signed out, server restarting) and a dropped link both retry, slower each time.
      const delay = opened ? 250 : this.#backoff;
      this.#backoff = Math.min(MAX_BACKOFF_MS, this.#backoff * 2);
      this.#timer = window.setTimeout(() => this.#connect(), delay);
    };
  }
}

export const events = new EventClient();
