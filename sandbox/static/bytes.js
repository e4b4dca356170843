/* Byte helpers shared by the page and its backend worker. */

export function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected bytes");
}

export function b64encode(data) {
  const bytes = toBytes(data);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function b64decode(text) {
  if (typeof text !== "string") throw new TypeError("expected base64 text");
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + toBytes(p).length, 0));
  let at = 0;
  for (const p of parts) { out.set(toBytes(p), at); at += toBytes(p).length; }
  return out;
}

export function equalBytes(a, b) {
  const x = toBytes(a), y = toBytes(b);
  if (x.length !== y.length) return false;
  let d = 0;
  for (let i = 0; i < x.length; i++) d |= x[i] ^ y[i];
  return d === 0;
}

export function hex(n) {
  return Array.from(randomBytes(n), (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
}

// X25519 keys travel as 32 raw bytes; WebCrypto imports private keys as PKCS #8.
const PKCS8_X25519 = Uint8Array.from([48, 46, 2, 1, 0, 48, 5, 6, 3, 43, 101, 110, 4, 34, 4, 32]);

export async function x25519KeyPair() {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  const pubKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const privKey = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)).slice(16);
  return { pubKey, privKey };
}

export function importX25519Private(privKey, extractable = false) {
  return crypto.subtle.importKey(
    "pkcs8", concat(PKCS8_X25519, privKey), { name: "X25519" }, extractable, ["deriveBits"]);
}

/* The public key of a raw X25519 private key (Chromium computes it on import). */
export async function x25519Public(privKey) {
  const key = await importX25519Private(privKey, true);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  return b64decode(jwk.x.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - jwk.x.length % 4) % 4));
}
