// DOM helpers shared by the console and the admin page.

/** The one element matching `sel`; a missing one is a markup bug, reported at once. */
export const $ = <T extends HTMLElement = HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel);
  if (!el) throw new Error(`page markup lacks ${sel}`);
  return el;
};

/** Creates an element with attributes and children (text is always set as text, never HTML). */
export function h(
  tag: string,
  attrs: Record<string, string | undefined> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) el.setAttribute(k, v);
  for (const c of children) if (c != null) el.append(c);
  return el;
}
