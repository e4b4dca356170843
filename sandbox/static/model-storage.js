/* model-storage: the account's chats, contacts and messages, about a hundred object stores.
 * Message rows are encrypted under the DB message key before they are written (as
 * WAWebDBEncryptMultipleMsgs does), so they do not compress. A first link fills the configured
 * volume while the account loads, as a history sync would. */
import { hex, randomBytes } from "./bytes.js";
import { withStores } from "./idb.js";
import { MODEL_DB, MODEL_STORES } from "./stores.js";

const ROW_BYTES = 3000;
const ROWS_PER_TX = 250;
const MESSAGES_PER_CHAT = 40;
const WORDS = ("ok thanks see you tomorrow meeting call later sent photo document where when " +
  "price order delivery yes no maybe great sure please address today morning evening").split(" ");

function filler(n, seed) {
  let s = "";
  let x = seed >>> 0 || 1;
  while (s.length < n) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    s += WORDS[(x >>> 0) % WORDS.length] + " ";
  }
  return s.slice(0, n);
}

async function sealRow(key, row) {
  const iv = randomBytes(12);
  const data = new TextEncoder().encode(JSON.stringify(row));
  return { iv, ct: new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, data)) };
}

export class ModelStorage {
  #key;
  #me;
  #written = 0;
  #rows = 0;

  constructor(dbMessageKey, me) {
    this.#key = dbMessageKey;
    this.#me = me;
  }

  get bytesWritten() { return this.#written; }

  /* Write about `bytes` of history: message rows, their chats and contacts. */
  async fillHistory(bytes) {
    const rows = Math.ceil(bytes / ROW_BYTES);
    for (let start = 0; start < rows; start += ROWS_PER_TX) {
      const batch = [];
      for (let i = start; i < Math.min(rows, start + ROWS_PER_TX); i++) {
        const n = this.#rows + i;
        const remote = `62899${String(1000000 + Math.floor(n / MESSAGES_PER_CHAT)).padStart(8, "0")}@c.us`;
        const id = `${n % 3 === 0}_${remote}_3EB0${hex(10)}`;
        batch.push({ n, id, remote, row: {
          id, t: 1700000000 + n * 37, type: n % 11 === 0 ? "image" : "chat", ack: 3,
          from: n % 3 === 0 ? this.#me : remote, to: n % 3 === 0 ? remote : this.#me,
          body: filler(ROW_BYTES - 400, n + 1),
        } });
      }
      const sealed = await Promise.all(batch.map((b) => sealRow(this.#key, b.row)));
      const firsts = batch.filter((b) => b.n % MESSAGES_PER_CHAT === 0);
      const chats = await Promise.all(firsts.map((b) => sealRow(this.#key, {
        id: b.remote, t: b.row.t, unreadCount: 0, name: `Chat ${b.n / MESSAGES_PER_CHAT}`,
      })));
      await withStores(MODEL_DB, MODEL_STORES, ["message", "chat", "contact"], "readwrite", async (s) => {
        batch.forEach((b, i) => {
          s.message.put({ id: b.id, rowId: b.n, t: b.row.t, msgRowOpaqueData: sealed[i] });
        });
        firsts.forEach((b, i) => {
          s.chat.put({ id: b.remote, t: b.row.t, chatRowOpaqueData: chats[i] });
          s.contact.put({ id: b.remote, name: `Contact ${b.n / MESSAGES_PER_CHAT}`, type: "in" });
        });
      });
      this.#written += sealed.reduce((n, r) => n + r.ct.length + 100, 0);
    }
    this.#rows += rows;
  }

  /* Keep one message, encrypted, as the app does for every message it shows. */
  async putMessage(msg) {
    const row = { ...msg.serialize(), id: msg.id._serialized };
    delete row.mediaData; delete row.mediaObject; delete row.mediaBlob;
    const sealed = await sealRow(this.#key, JSON.parse(JSON.stringify(row, (k, v) =>
      v && typeof v === "object" && v._serialized ? v._serialized : v)));
    await withStores(MODEL_DB, MODEL_STORES, ["message"], "readwrite", async (s) => {
      s.message.put({ id: row.id, rowId: ++this.#rows, t: row.t, msgRowOpaqueData: sealed });
    });
  }
}

/* Create model-storage with all its stores (an empty account). */
export function createModelStorage() {
  return withStores(MODEL_DB, MODEL_STORES, ["user-prefs"], "readwrite", async (s) => {
    s["user-prefs"].put({ id: "created", t: Date.now() });
  });
}
