// A small client for the public API: the CLI uses nothing else.
import { createReadStream, statSync } from 'node:fs';
import { Readable } from 'node:stream';
import WebSocket from 'ws';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  constructor(status: number, code: string, message: string, details: unknown) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class ApiClient {
  readonly url: string;
  readonly token: string;
  constructor(url: string, token: string) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
  }

  async request<T = any>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return this.#parse<T>(res);
  }

  async #parse<T>(res: Response): Promise<T> {
    const text = await res.text();
    let parsed: any;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (!res.ok) {
      const e = parsed?.error ?? {};
      throw new ApiError(res.status, e.code ?? `HTTP_${res.status}`, e.message ?? `HTTP ${res.status}`, e.details);
    }
    return parsed as T;
  }

  /** Streams a file as the request body, reporting bytes sent. */
  async upload<T = any>(path: string, file: string, onProgress: (sent: number, total: number) => void): Promise<T> {
    const total = statSync(file).size;
    let sent = 0;
    const stream = createReadStream(file, { highWaterMark: 1024 * 1024 });
    stream.on('data', (c) => {
      sent += c.length;
      onProgress(sent, total);
    });
    const res = await fetch(`${this.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/octet-stream', 'content-length': String(total) },
      body: Readable.toWeb(stream) as unknown as BodyInit,
      duplex: 'half',
    } as RequestInit);
    return this.#parse<T>(res);
  }

  /** Waits for a job to end, reporting progress from the WebSocket (with polling as a fallback). */
  async waitForJob(jobId: string, onProgress: (done: number, total: number, phase: string) => void, timeoutMs = 24 * 3600_000): Promise<any> {
    const wsUrl = `${this.url.replace(/^http/, 'ws')}/api/v1/events?types=job.progress,job.succeeded,job.failed,job.cancelled&since=0`;
    let ws: WebSocket | undefined;
    try {
      ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${this.token}` } });
      ws.on('error', () => {});
      ws.on('message', (m) => {
        const e = JSON.parse(String(m));
        if (e.jobId === jobId && e.type === 'job.progress') onProgress(e.done, e.total, e.phase);
      });
    } catch {
      ws = undefined;
    }
    try {
      const deadline = Date.now() + timeoutMs;
      for (let i = 0; Date.now() < deadline; i++) {
        const job = await this.request('GET', `/api/v1/jobs/${jobId}`);
        if (job.state !== 'queued' && job.state !== 'running') {
          onProgress(job.progress.done, job.progress.total, job.phase);
          return job;
        }
        if (!ws || ws.readyState !== WebSocket.OPEN) onProgress(job.progress.done, job.progress.total, job.phase);
        await new Promise((r) => setTimeout(r, Math.min(1000, 100 + i * 20)));
      }
      throw new Error(`job ${jobId} did not finish in time`);
    } finally {
      ws?.terminate();
    }
  }
}
