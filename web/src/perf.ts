// Figures the UI benchmark reads from the page (test/bench/ui.ts): how long the pool page took to
// render its desktops, and how much main-thread time applying desktop.state events cost.
export interface PoolPagePerf {
  /** From the desktops response arriving to the grid being in the DOM. */
  renderMs: number | undefined;
  desktopsRendered: number;
  eventsApplied: number;
  desktopChangesApplied: number;
  /** Main-thread time of every animation-frame flush: applying queued changes and committing the DOM. */
  applyMs: number;
  frames: number;
  maxFrameMs: number;
  domCells: number;
}

export const poolPagePerf: PoolPagePerf = {
  renderMs: undefined,
  desktopsRendered: 0,
  eventsApplied: 0,
  desktopChangesApplied: 0,
  applyMs: 0,
  frames: 0,
  maxFrameMs: 0,
  domCells: 0,
};

export function resetPoolPagePerf(): void {
  Object.assign(poolPagePerf, { renderMs: undefined, desktopsRendered: 0, eventsApplied: 0, desktopChangesApplied: 0, applyMs: 0, frames: 0, maxFrameMs: 0, domCells: 0 });
}

(window as unknown as { __thicketPerf: PoolPagePerf }).__thicketPerf = poolPagePerf;
