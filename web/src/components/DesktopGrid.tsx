// The per-desktop state grid. Large pools render only the rows in view (plus a margin), so a pool of
// thousands of desktops costs as much DOM as one screenful; small pools render every cell.
import { useEffect, useRef, useState } from 'preact/hooks';
import type { DesktopState } from '../types.ts';

const CELL_W = 132;
const CELL_H = 30;
const VIEW_H = 420;
const OVERSCAN_ROWS = 4;
/** Up to this many desktops every cell is in the DOM (searchable with the browser's find, too). */
export const VIRTUALIZE_ABOVE = 500;

export interface GridModel {
  names: string[];
  states: Map<string, DesktopState>;
}

export function DesktopGrid(props: { model: GridModel; version: number; onCells?: (n: number) => void }) {
  const { names, states } = props.model;
  const scroller = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [width, setWidth] = useState(800);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setWidth(el.clientWidth || 800));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const virtual = names.length > VIRTUALIZE_ABOVE;
  const cols = Math.max(1, Math.floor(width / CELL_W));
  const rows = Math.ceil(names.length / cols);
  let first = 0;
  let last = names.length;
  if (virtual) {
    const firstRow = Math.max(0, Math.floor(scrollTop / CELL_H) - OVERSCAN_ROWS);
    const lastRow = Math.min(rows, Math.ceil((scrollTop + VIEW_H) / CELL_H) + OVERSCAN_ROWS);
    first = firstRow * cols;
    last = Math.min(names.length, lastRow * cols);
  }

  const cells = [];
  for (let i = first; i < last; i++) {
    const name = names[i];
    const state = states.get(name) ?? 'provisioning';
    const style = virtual ? { top: `${Math.floor(i / cols) * CELL_H}px`, left: `${(i % cols) * CELL_W}px` } : undefined;
    cells.push(
      <li key={name} class={`cell state-${state}`} data-state={state} title={`${name}: ${state}`} aria-posinset={i + 1} aria-setsize={names.length} style={style}>
        <span class="cell-name">{name}</span>
        <span class="sr-only">, {state}</span>
      </li>,
    );
  }
  props.onCells?.(last - first);

  return (
    <div
      ref={scroller}
      class={`grid-scroll${virtual ? ' virtual' : ''}`}
      style={virtual ? { height: `${VIEW_H}px` } : undefined}
      tabIndex={0}
      aria-label={`Desktops (${names.length})`}
      onScroll={virtual ? (e) => setScrollTop(e.currentTarget.scrollTop) : undefined}
    >
      <ul class="grid" aria-label="Desktop states" style={virtual ? { height: `${rows * CELL_H}px` } : undefined}>
        {cells}
      </ul>
    </div>
  );
}
