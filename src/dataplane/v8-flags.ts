// V8 heap settings for the data plane (the engine and the NVMe/TCP target). V8 flags are per process: set
// before the data-plane worker starts, they apply to its isolate (checked: its first full GC moved from
// 21 MB of old generation to past the 64 MB below). The benchmarks start their servers with the same
// flags, so that they measure what the data plane does.
import v8 from 'node:v8';

/**
 * --initial-old-space-size: with V8's default, the target's old generation limit settled near twice its
 * live size (about 18 MB for 9 MB live), closer to it than the young generation is large, so V8 began
 * incremental marking again right after every full GC: 40-98 full GCs in 3 s of 4 KiB writes at QD32
 * (a plain Node server with the same traffic: 6). With 64 MB: 4-7, and the target went from 105-152k to
 * 139-165k IOPS at 5.9-6.7 us of CPU per write instead of 6.7-10.9 (test/bench/nvme.ts, BENCH_V8_DEFAULTS=1
 * for the comparison). The cost is up to about 50 MB more old generation between full GCs.
 */
export const DATAPLANE_V8_FLAGS: readonly string[] = ['--initial-old-space-size=64'];

let applied = false;

/** Sets DATAPLANE_V8_FLAGS for isolates created from now on (call before starting the data-plane worker). */
export function applyDataplaneV8Flags(): void {
  if (applied) return;
  applied = true;
  for (const flag of DATAPLANE_V8_FLAGS) v8.setFlagsFromString(flag);
}
