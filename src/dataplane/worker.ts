// The data-plane thread: owns the engine (and the NVMe/TCP target) so that database, HTTP and JSON work
// on the main thread never stalls block I/O.
import { rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { Engine } from '../engine/engine.ts';
import { EngineError } from '../engine/errors.ts';
import { CloneNamespaceBackend } from '../nvmeof/target/engine-backend.ts';
import { Target } from '../nvmeof/target/target.ts';
import { TcpListener } from '../nvmeof/transport/tcp-listener.ts';
import type { DataplaneOps, DataplaneOptions, DataplaneRequest, DataplaneResponse, OpName, PoolUsage } from './protocol.ts';

const options = workerData as DataplaneOptions;
const engine = new Engine({ replicaCacheBytes: options.replicaCacheBytes, journalBytes: options.journalBytes, reserveBytes: options.reserveBytes });
engine.onError = (err) => parentPort?.postMessage({ id: -1, ok: false, error: { code: 'BACKGROUND', message: String((err as Error)?.message ?? err), name: 'Error' } });

let target: Target | undefined;
let listener: TcpListener | undefined;

function requireTarget(): Target {
  if (!target) throw new EngineError('TARGET_NOT_STARTED', 'the NVMe/TCP target is not running');
  return target;
}

type Handlers = { [K in OpName]: (args: Parameters<DataplaneOps[K]>[0]) => ReturnType<DataplaneOps[K]> | Promise<ReturnType<DataplaneOps[K]>> };

const handlers: Handlers = {
  async startTarget({ host, ioPort, discoveryPort, advertiseAddress }) {
    if (listener) return { ioPort: listener.ioPort, discoveryPort: listener.discoveryPort };
    target = new Target({ ioPort, advertiseAddress, firmware: options.firmware });
    listener = new TcpListener(target);
    await listener.listen({ host, ioPort, discoveryPort });
    return { ioPort: listener.ioPort, discoveryPort: listener.discoveryPort };
  },
  addSubsystem({ nqn }) {
    requireTarget().addSubsystem(nqn);
  },
  removeSubsystem({ nqn }) {
    requireTarget().removeSubsystem(nqn);
  },
  setSubsystemHosts({ nqn, hosts }) {
    requireTarget().setHosts(nqn, hosts);
  },
  async addNamespaces({ nqn, namespaces }) {
    const t = requireTarget();
    for (let i = 0; i < namespaces.length; i += 200) {
      if (i > 0) await new Promise((r) => setImmediate(r));
      t.addNamespaces(
        nqn,
        namespaces.slice(i, i + 200).map((n) => ({
        nsid: n.nsid,
        uuid: n.uuid,
        nguid: Buffer.from(n.nguid, 'hex'),
        backend: new CloneNamespaceBackend(engine.clone(n.cloneId)),
          visibleTo: n.visibleTo,
        })),
      );
    }
  },
  removeNamespace({ nqn, nsid }) {
    requireTarget().removeNamespaces(nqn, [nsid]);
  },
  controllers() {
    if (!target) return [];
    return [...target.controllers.values()].map((c) => ({ cntlid: c.cntlid, subnqn: c.subnqn, hostnqn: c.hostnqn, queues: c.queues.size, discovery: c.discovery }));
  },
  openPool: ({ pool, clones }) => engine.openPool(pool, clones),
  async closePool({ poolId }) {
    const pool = engine.pools.get(poolId);
    if (!pool) return;
    if (pool.clones.size > 0) throw new EngineError('POOL_BUSY', `storage pool ${poolId} still has clones`);
    await pool.close();
    engine.pools.delete(poolId);
    // The pool's directory is the operator's: only what the engine made in it goes (its journal, and the
    // clones/ and replicas/ directories once empty), so a deleted pool leaves nothing of Thicket behind.
    await rm(path.join(pool.path, 'journal'), { recursive: true, force: true });
    for (const dir of ['clones', 'replicas']) await rmdir(path.join(pool.path, dir)).catch(() => {});
  },
  async createClones({ clones }) {
    // In slices, yielding between them, so a burst of thousands never holds up I/O for long.
    for (let i = 0; i < clones.length; i += 200) {
      engine.createClones(clones.slice(i, i + 200));
      if (i + 200 < clones.length) await new Promise((r) => setImmediate(r));
    }
  },
  deleteClone: ({ id }) => engine.deleteClone(id),
  async deleteClones({ ids }) {
    await Promise.all(ids.map((id) => engine.deleteClone(id)));
  },
  resetClone: ({ id }) => engine.resetClone(id),
  async resetClones({ ids }) {
    // Resets of many clones share the pool journal's group commit.
    // Each clone's outcome on its own: a reset that throws at once (a failed or closed clone) must not
    // reject the whole batch and leave the other clones' results unknown.
    return Promise.all(ids.map((id) => perClone(id, () => engine.resetClone(id))));
  },
  async recomposeClones({ ids, replica, sizeBytes }) {
    return Promise.all(ids.map((id) => perClone(id, () => engine.recomposeClone(id, replica, sizeBytes))));
  },
  replaceNamespace({ nqn, nsid, cloneId }) {
    requireTarget().replaceNamespaceBackend(nqn, nsid, new CloneNamespaceBackend(engine.clone(cloneId)));
  },
  removeNamespaces({ nqn, nsids }) {
    const t = requireTarget();
    t.removeNamespaces(nqn, nsids);
  },
  setQos({ id, qos }) {
    engine.setQos(id, qos);
  },
  cloneInfo({ ids }) {
    if (ids) return ids.filter((id) => engine.hasClone(id)).map((id) => engine.info(id));
    const out = [];
    for (const pool of engine.pools.values()) for (const id of pool.clones.keys()) out.push(engine.info(id));
    return out;
  },
  poolUsage({ poolId }) {
    const out: PoolUsage[] = [];
    for (const pool of engine.pools.values()) {
      if (poolId && pool.id !== poolId) continue;
      out.push({ poolId: pool.id, ...pool.usage() });
    }
    return out;
  },
  repointReplica({ replicaId, path }) {
    engine.repointReplica(replicaId, path);
  },
  releaseReplica({ replicaId }) {
    engine.releaseReplica(replicaId);
  },
  reparentClones({ cloneIds, replica }) {
    for (const id of cloneIds) engine.reparentClone(id, replica);
  },
  cacheStats: () => engine.cache.getStats(),
  ping: () => ({ ok: true }),
};

parentPort!.on('message', async (msg: DataplaneRequest | { op: 'shutdown' }) => {
  if (msg.op === 'shutdown') {
    target?.close();
    await listener?.close().catch(() => {});
    await engine.close().catch(() => {});
    parentPort!.postMessage({ id: -2, ok: true, result: null });
    return;
  }
  const req = msg as DataplaneRequest;
  let res: DataplaneResponse;
  try {
    const handler = handlers[req.op] as (args: unknown) => unknown;
    if (!handler) throw new EngineError('UNKNOWN_OP', `unknown data-plane operation ${req.op}`);
    res = { id: req.id, ok: true, result: await handler(req.args) };
  } catch (err) {
    const e = err as Error & { code?: string };
    res = { id: req.id, ok: false, error: { code: e.code ?? 'INTERNAL', message: e.message, name: e.name } };
  }
  parentPort!.postMessage(res);
});

/** Runs one clone's step, turning a synchronous throw or a rejection into that clone's error result. */
async function perClone(id: string, step: () => Promise<unknown>): Promise<{ id: string; error?: string }> {
  try {
    await step();
    return { id };
  } catch (err) {
    return { id, error: (err as Error).message };
  }
}
