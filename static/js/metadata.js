// The workflow ComfyUI stores inside its outputs, read in the page (nothing is uploaded for this):
// PNG text chunks, the EXIF of an (animated) WebP, the metadata atoms of an MP4/MOV.

import { parseJSON } from './api.js';

const MAX_BYTES = 256 * 1024 * 1024;
const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** {prompt, workflow} (either may be null) found in an output file, or null when it holds neither. */
export async function workflowFromMedia(file) {
  if (file.size > MAX_BYTES) throw new Error(`${file.name} is larger than ${MAX_BYTES / 1024 / 1024} MB`);
  const bytes = new Uint8Array(await file.arrayBuffer());
  let texts = null;
  if (isPng(bytes)) texts = await pngTexts(bytes);
  else if (isWebp(bytes)) texts = webpTexts(bytes);
  else if (isIsobmff(bytes)) texts = isobmffTexts(bytes);
  else throw new Error(`${file.name} is not a PNG, WebP or MP4 file`);
  return pick(texts);
}

function pick(texts) {
  const found = { prompt: null, workflow: null };
  for (const [rawKey, value] of Object.entries(texts || {})) {
    const key = rawKey.toLowerCase();
    if (key !== 'prompt' && key !== 'workflow' && key !== 'comment') continue;
    let data;
    try { data = parseJSON(value); } catch { continue; }
    if (key === 'comment') { // VideoHelperSuite: one JSON object holding both
      if (data && typeof data === 'object') {
        if (data.prompt && !found.prompt) found.prompt = typeof data.prompt === 'string' ? safeParse(data.prompt) : data.prompt;
        if (data.workflow && !found.workflow) found.workflow = typeof data.workflow === 'string' ? safeParse(data.workflow) : data.workflow;
      }
    } else if (data && typeof data === 'object') found[key] = data;
  }
  return found.prompt || found.workflow ? found : null;
}

function safeParse(text) {
  try { return parseJSON(text); } catch { return null; }
}

// --- PNG: tEXt, iTXt and zTXt chunks ------------------------------------------------------------------
const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function isPng(b) {
  return PNG_SIGNATURE.every((v, i) => b[i] === v);
}

async function pngTexts(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const texts = {};
  let pos = 8;
  while (pos + 12 <= b.length) {
    const length = view.getUint32(pos);
    const type = latin1.decode(b.subarray(pos + 4, pos + 8));
    const data = b.subarray(pos + 8, Math.min(b.length, pos + 8 + length));
    if (type === 'IEND') break;
    const zero = data.indexOf(0);
    if (zero > 0 && (type === 'tEXt' || type === 'iTXt' || type === 'zTXt')) {
      const key = latin1.decode(data.subarray(0, zero));
      if (type === 'tEXt') {
        // ComfyUI writes JSON as UTF-8 bytes in tEXt (PIL encodes latin-1 only when it can): try UTF-8 first
        texts[key] = decodeText(data.subarray(zero + 1));
      } else if (type === 'zTXt') {
        texts[key] = utf8.decode(await inflate(data.subarray(zero + 2)));
      } else {
        const compressed = data[zero + 1] === 1;
        let p = zero + 3;
        p = data.indexOf(0, p) + 1; // language tag
        p = data.indexOf(0, p) + 1; // translated keyword
        const body = data.subarray(p);
        texts[key] = utf8.decode(compressed ? await inflate(body) : body);
      }
    }
    pos += 12 + length;
  }
  return texts;
}

function decodeText(bytes) {
  try { return new TextDecoder('utf-8', { fatal: true }).decode(bytes); } catch { return latin1.decode(bytes); }
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// --- WebP: the EXIF chunk, whose ASCII tags hold "prompt:{...}" and "workflow:{...}" ---------------------
function isWebp(b) {
  return latin1.decode(b.subarray(0, 4)) === 'RIFF' && latin1.decode(b.subarray(8, 12)) === 'WEBP';
}

function webpTexts(b) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let pos = 12;
  while (pos + 8 <= b.length) {
    const type = latin1.decode(b.subarray(pos, pos + 4));
    const size = view.getUint32(pos + 4, true);
    if (type === 'EXIF') return exifTexts(b.subarray(pos + 8, Math.min(b.length, pos + 8 + size)));
    pos += 8 + size + (size % 2);
  }
  return {};
}

/** Every ASCII/UNDEFINED value of IFD0 shaped "key:value" (how ComfyUI's savers store them). */
export function exifTexts(exif) {
  let tiff = exif;
  if (latin1.decode(tiff.subarray(0, 6)) === 'Exif\0\0') tiff = tiff.subarray(6);
  const texts = {};
  if (tiff.length < 8) return texts;
  const little = tiff[0] === 0x49;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const u16 = (o) => view.getUint16(o, little);
  const u32 = (o) => view.getUint32(o, little);
  const ifd = u32(4);
  if (ifd + 2 > tiff.length) return texts;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > tiff.length) break;
    const type = u16(entry + 2);
    const n = u32(entry + 4);
    if (type !== 2 && type !== 7) continue; // ASCII, UNDEFINED
    const start = n <= 4 ? entry + 8 : u32(entry + 8);
    if (start + n > tiff.length) continue;
    let text = decodeText(tiff.subarray(start, start + n));
    text = text.replace(/\0+$/, '');
    const colon = text.indexOf(':');
    if (colon > 0) texts[text.slice(0, colon)] = text.slice(colon + 1);
  }
  return texts;
}

// --- MP4/MOV: moov/udta/meta with a keys box (ffmpeg's use_metadata_tags) or ilst items ------------------
function isIsobmff(b) {
  return latin1.decode(b.subarray(4, 8)) === 'ftyp';
}

function* boxes(b, start, end) {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let pos = start;
  while (pos + 8 <= end) {
    let size = view.getUint32(pos);
    const type = latin1.decode(b.subarray(pos + 4, pos + 8));
    let header = 8;
    if (size === 1 && pos + 16 <= end) { size = Number(view.getBigUint64(pos + 8)); header = 16; }
    else if (size === 0) size = end - pos;
    if (size < header || pos + size > end) return;
    yield { type, start: pos + header, end: pos + size };
    pos += size;
  }
}

function child(b, box, type) {
  for (const c of boxes(b, box.start, box.end)) if (c.type === type) return c;
  return null;
}

function isobmffTexts(b) {
  const texts = {};
  const moov = [...boxes(b, 0, b.length)].find((x) => x.type === 'moov');
  if (!moov) return texts;
  const udta = child(b, moov, 'udta');
  const metas = [];
  if (udta) { const m = child(b, udta, 'meta'); if (m) metas.push(m); }
  const direct = child(b, moov, 'meta');
  if (direct) metas.push(direct);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (const meta of metas) {
    // an ISO 'meta' is a full box (4 bytes of version/flags); QuickTime's is not
    const first = latin1.decode(b.subarray(meta.start + 4, meta.start + 8));
    const inner = { start: first === 'hdlr' || first === 'keys' || first === 'ilst' ? meta.start : meta.start + 4, end: meta.end };
    const keys = [];
    const keysBox = child(b, inner, 'keys');
    if (keysBox) {
      const count = view.getUint32(keysBox.start + 4);
      let pos = keysBox.start + 8;
      for (let i = 0; i < count && pos + 8 <= keysBox.end; i++) {
        const size = view.getUint32(pos);
        keys.push(utf8.decode(b.subarray(pos + 8, pos + size)));
        pos += size;
      }
    }
    const ilst = child(b, inner, 'ilst');
    if (!ilst) continue;
    for (const item of boxes(b, ilst.start, ilst.end)) {
      const index = view.getUint32(item.start - 4);
      let name = item.type;
      if (keysBox && index >= 1 && index <= keys.length) name = keys[index - 1];
      else if (item.type === '\u00a9cmt') name = 'comment';
      const data = child(b, item, 'data');
      if (!data) continue;
      texts[name] = utf8.decode(b.subarray(data.start + 8, data.end));
    }
  }
  return texts;
}
