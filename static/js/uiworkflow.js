// What only the UI-format file (workflow.json) knows, read for the form: subgraph instances (their
// titles and promoted inputs), each seed's control_after_generate, and the author's App Mode list.
// The API-format workflow the server converted is what runs; this only names and orders its fields.

export const CONTROLS = new Set(['fixed', 'increment', 'decrement', 'randomize']);
const VIRTUAL = new Set(['Note', 'MarkdownNote', 'Reroute', 'PrimitiveNode']);

function unwrap(source) {
  if (!source || typeof source !== 'object') return null;
  if (Array.isArray(source.nodes)) return source;
  if (source.workflow && Array.isArray(source.workflow.nodes)) return source.workflow;
  return null;
}

function linkOf(link) {
  if (Array.isArray(link)) return { id: link[0], origin_id: link[1], origin_slot: link[2], target_id: link[3], target_slot: link[4] };
  return link && typeof link === 'object' ? link : null;
}

/**
 * {groups: Map(apiPrefix → {title, promoted: [{key, label}]}), controls: Map(apiNodeId → [{value, control}]),
 *  linear: [key]} for a UI workflow; empty maps for anything else.
 */
export function readUiSource(source) {
  const info = { groups: new Map(), controls: new Map(), linear: [] };
  const graph = unwrap(source);
  if (!graph) return info;
  const defs = new Map();
  for (const sg of ((graph.definitions || {}).subgraphs || [])) if (sg && sg.id) defs.set(String(sg.id), sg);
  walk(graph.nodes || [], '', defs, info, 0);
  const linear = (graph.extra || {}).linearData;
  const entries = Array.isArray(linear) ? linear : (linear && Array.isArray(linear.inputs) ? linear.inputs : []);
  for (const entry of entries) {
    if (Array.isArray(entry) && entry.length >= 2) info.linear.push(`${entry[0]}.${entry[1]}`);
  }
  return info;
}

function walk(nodes, prefix, defs, info, depth) {
  if (depth > 8) return;
  for (const node of nodes) {
    if (!node || typeof node !== 'object' || VIRTUAL.has(node.type)) continue;
    const apiId = `${prefix}${node.id}`;
    const sg = defs.get(String(node.type));
    if (sg) {
      const promoted = [];
      const seen = new Set();
      // promoted widgets: properties.proxyWidgets [[innerId, widget]] (frontend ≥ 1.28)
      for (const entry of ((node.properties || {}).proxyWidgets || [])) {
        if (Array.isArray(entry) && entry.length >= 2 && String(entry[0]) !== '-1') {
          const key = `${apiId}:${entry[0]}.${entry[1]}`;
          if (!seen.has(key)) { seen.add(key); promoted.push({ key, label: String(entry[1]) }); }
        }
      }
      // subgraph inputs wired to an inner widget input
      const inner = new Map((sg.nodes || []).map((n) => [String(n.id), n]));
      (sg.inputs || []).forEach((input, index) => {
        for (const raw of sg.links || []) {
          const link = linkOf(raw);
          if (!link || link.origin_id !== -10 || link.origin_slot !== index) continue;
          const target = inner.get(String(link.target_id));
          const slot = target && (target.inputs || [])[link.target_slot];
          if (!slot || !slot.widget) continue;
          const key = `${apiId}:${target.id}.${slot.widget.name || slot.name}`;
          if (!seen.has(key)) { seen.add(key); promoted.push({ key, label: String(input.label || input.name || slot.name) }); }
        }
      });
      info.groups.set(apiId, { title: String(node.title || sg.name || `subgraph ${node.id}`), promoted });
      walk(sg.nodes || [], `${apiId}:`, defs, info, depth + 1);
      continue;
    }
    const values = node.widgets_values;
    if (!Array.isArray(values)) continue;
    const found = [];
    for (let i = 1; i < values.length; i++) {
      const v = values[i];
      const control = v === true ? 'randomize' : v === false ? 'fixed' : v;
      if (typeof values[i - 1] === 'number' && Number.isInteger(values[i - 1]) && (CONTROLS.has(control))
        && (typeof v === 'string' || typeof v === 'boolean')) {
        found.push({ value: values[i - 1], control });
      }
    }
    if (found.length) info.controls.set(apiId, found);
  }
}

/** The control_after_generate of a seed param (by its node and value), or null when the file has none. */
export function controlFor(info, param) {
  const list = info.controls.get(String(param.node_id));
  if (!list) return null;
  const exact = list.find((c) => String(c.value) === String(param.value));
  return (exact || (list.length === 1 ? list[0] : null) || {}).control || null;
}
