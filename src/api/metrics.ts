// Prometheus metrics. HTTP figures are counted as requests pass; job and pool figures are read from the
// database when /metrics is scraped, so every process reports the same truth.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import type { Database } from '../db/schema.ts';

export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  readonly eventStreams: Gauge;

  constructor(db: Kysely<Database>) {
    collectDefaultMetrics({ register: this.registry, prefix: 'thicket_' });
    this.httpRequests = new Counter({ name: 'thicket_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers: [this.registry] });
    this.httpDuration = new Histogram({
      name: 'thicket_http_request_duration_seconds',
      help: 'HTTP request duration',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [this.registry],
    });
    this.eventStreams = new Gauge({ name: 'thicket_event_streams', help: 'Open WebSocket event streams', registers: [this.registry] });
    new Gauge({
      name: 'thicket_jobs',
      help: 'Jobs by kind and state',
      labelNames: ['kind', 'state'],
      registers: [this.registry],
      async collect() {
        this.reset();
        const rows = await db.selectFrom('jobs').select(['kind', 'state', sql<number>`count(*)::int8`.as('n')]).groupBy(['kind', 'state']).execute();
        for (const r of rows) this.set({ kind: r.kind, state: r.state }, Number(r.n));
      },
    });
    new Gauge({
      name: 'thicket_replicas',
      help: 'Replicas by state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        this.reset();
        const rows = await db.selectFrom('replicas').select(['state', sql<number>`count(*)::int8`.as('n')]).groupBy('state').execute();
        for (const r of rows) this.set({ state: r.state }, Number(r.n));
      },
    });
    new Gauge({
      name: 'thicket_templates',
      help: 'Registered templates',
      registers: [this.registry],
      async collect() {
        const r = await db.selectFrom('templates').select(sql<number>`count(*)::int8`.as('n')).executeTakeFirst();
        this.set(Number(r?.n ?? 0));
      },
    });
  }
}
