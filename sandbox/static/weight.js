/* The JS heap a real tab holds (its stores, caches, rendered lists): many small retained
 * objects with their own strings, built at load before the first QR, a slice per task so that
 * the page keeps answering while it builds them. */

// Measured in Chromium 156 (docs/sandbox.md): one record below retains about this much heap.
const BYTES_PER_RECORD = 360;
const RECORDS_PER_SLICE = 4000;
const CHARS = 180;

const retained = [];

function record(i, codes) {
  for (let k = 0; k < CHARS; k++) codes[k] = 97 + ((i * 31 + k * 7 + (k * i >>> 3)) % 26);
  codes[0] = 48 + (i % 10);
  return {
    id: `${i}@model`,
    body: String.fromCharCode.apply(null, codes),
    t: 1700000000 + i,
    ack: i % 4,
    unread: (i & 7) === 0,
    flags: [i & 1, i & 2, i & 4],
    meta: { kind: i % 5, rank: i / 3 },
  };
}

function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

/* Build `mb` megabytes of retained objects; resolves when done. */
export async function holdHeap(mb) {
  const total = Math.round(mb * 1024 * 1024 / BYTES_PER_RECORD);
  const codes = new Array(CHARS);
  const byId = new Map();
  retained.push(byId);
  for (let i = 0; i < total; i += RECORDS_PER_SLICE) {
    for (let k = i; k < Math.min(total, i + RECORDS_PER_SLICE); k++) {
      const r = record(k, codes);
      byId.set(r.id, r);
    }
    await nextTask();
  }
  return total;
}
