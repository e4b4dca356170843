/* The login as the app keeps it, and the check a load makes before it may use it.
 *
 * At link, in this realm: 128 random bytes imported as a non-extractable HKDF key, stored
 * structured-cloned in wawc_db_enc/keys; WANoiseInfo's private and public noise keys
 * AES-CBC-128 encrypted under a key derived from it (HKDF-SHA-256, salt WAWebEncKeySalt,
 * info [0]); WANoiseInfoIv; last-wid-md. In the backend worker: the rest (backend-worker.js). */
import {
  b64decode, b64encode, equalBytes, randomBytes, x25519KeyPair, x25519Public,
} from "./bytes.js";
import { exists, remove, withStores } from "./idb.js";
import {
  ENC_DB, ENC_STORES, LS_NOISE, LS_NOISE_IV, LS_SALT, LS_WID, MODEL_DB, SIGNAL_DB,
} from "./stores.js";

const KEY_LIFETIME_MS = 400 * 24 * 3600 * 1000;

/* The backend worker, and calls to it. */
export class Backend {
  #worker;
  #calls = new Map();
  #next = 0;

  constructor() {
    this.#worker = new Worker("/static/backend-worker.js", { type: "module", name: "WAWebBackendWorkerV2" });
    this.#worker.onmessage = (event) => {
      const { id, ok, result, error } = event.data;
      const call = this.#calls.get(id);
      if (!call) return;
      this.#calls.delete(id);
      if (ok) call.resolve(result); else call.reject(new Error(error));
    };
    this.#worker.onerror = (event) => {
      for (const call of this.#calls.values()) call.reject(new Error("backend worker: " + event.message));
      this.#calls.clear();
    };
  }

  call(op, args) {
    const id = ++this.#next;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      this.#worker.postMessage({ id, op, args });
    });
  }
}

/* A new set of keys for a QR code: noise and identity X25519 pairs, the ADV secret. */
export async function freshKeys() {
  return {
    noise: await x25519KeyPair(),
    registration: {
      registrationId: (crypto.getRandomValues(new Uint16Array(1))[0] & 0x3fff) + 1,
      identityKeyPair: await x25519KeyPair(),
      advSecretKey: b64encode(randomBytes(32)),
    },
    recoveryToken: randomBytes(32),
  };
}

function encKey(baseKey, salt, usage) {
  // A stored key that is not a CryptoKey (a copy that lost it) throws here, as on the real page:
  // "deriveKey: parameter 2 is not of type 'CryptoKey'".
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt, info: new Uint8Array(1) },
    baseKey, { name: "AES-CBC", length: 128 }, false, [usage]);
}

/* The key that encrypts model-storage rows, derived from the same HKDF key. */
export function dbMessageKey(login) {
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: login.salt, info: Uint8Array.of(1) },
    login.baseKey, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
}

/* Store a linked login: the worker's part first, then this realm's, last-wid-md last. */
export async function storeLogin(backend, keys, wid) {
  await clearLogin();
  await backend.call("createLogin", { registration: keys.registration, wid });
  const baseKey = await crypto.subtle.importKey("raw", randomBytes(128), { name: "HKDF" }, false, ["deriveKey"]);
  await withStores(ENC_DB, ENC_STORES, ["keys"], "readwrite", async (s) => {
    s.keys.add({ key: baseKey, _expiration: Date.now() + KEY_LIFETIME_MS });
  });
  const salt = randomBytes(128);
  const ivs = [randomBytes(16), randomBytes(16), randomBytes(16)];
  const enc = await encKey(baseKey, salt, "encrypt");
  const seal = async (iv, data) => new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, enc, data));
  const noiseInfo = {
    privKey: b64encode(await seal(ivs[0], keys.noise.privKey)),
    pubKey: b64encode(await seal(ivs[1], keys.noise.pubKey)),
    recoveryToken: b64encode(keys.recoveryToken),
  };
  localStorage.setItem(LS_SALT, JSON.stringify(b64encode(salt)));
  localStorage.setItem(LS_NOISE_IV, JSON.stringify(ivs.map(b64encode)));
  localStorage.setItem(LS_NOISE, JSON.stringify(noiseInfo));
  localStorage.setItem(LS_WID, JSON.stringify(wid));
  return { wid, noise: keys.noise, registration: keys.registration, recoveryToken: keys.recoveryToken, baseKey, salt };
}

function readJson(name) {
  const raw = localStorage.getItem(name);
  return raw === null ? null : JSON.parse(raw);
}

/* What this load finds: {status: "none"} (never linked), {status: "no-salt"} (login data but no
 * salt: the real app logs out), {status: "invalid", reason} (it does not open: a QR follows,
 * nothing is deleted) or {status: "ok", login}. */
export async function readLogin(backend) {
  const anything = [LS_NOISE, LS_NOISE_IV, LS_WID].some((k) => localStorage.getItem(k) !== null);
  if (!anything && !(await exists(ENC_DB))) return { status: "none" };
  if (localStorage.getItem(LS_SALT) === null) {
    return anything ? { status: "no-salt" } : { status: "none" };
  }
  try {
    const salt = b64decode(readJson(LS_SALT));
    const noiseInfo = readJson(LS_NOISE);
    const ivs = (readJson(LS_NOISE_IV) || []).map(b64decode);
    const wid = readJson(LS_WID);
    if (!noiseInfo || ivs.length < 2 || typeof wid !== "string") throw new Error("the login is incomplete");
    const records = await withStores(ENC_DB, ENC_STORES, ["keys"], "readonly", async (s) => {
      const r = s.keys.getAll();
      return new Promise((ok, fail) => { r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
    });
    const record = records[records.length - 1];
    if (!record) throw new Error("no key in wawc_db_enc");
    const dec = await encKey(record.key, salt, "decrypt");
    const open = async (iv, b64) => new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CBC", iv }, dec, b64decode(b64)));
    const privKey = await open(ivs[0], noiseInfo.privKey);
    const pubKey = await open(ivs[1], noiseInfo.pubKey);
    if (privKey.length !== 32 || pubKey.length !== 32) throw new Error("WANoiseInfo holds no key pair");
    if (!equalBytes(await x25519Public(privKey), pubKey)) throw new Error("WANoiseInfo's keys do not pair");
    const registration = await backend.call("getRegistrationInfo");
    return {
      status: "ok",
      login: {
        wid, noise: { pubKey, privKey }, registration,
        recoveryToken: b64decode(noiseInfo.recoveryToken), baseKey: record.key, salt,
      },
    };
  } catch (e) {
    return { status: "invalid", reason: String(e && e.message || e) };
  }
}

/* Forget the login and the account's data (a logout). */
export async function clearLogin() {
  for (const key of [LS_SALT, LS_NOISE, LS_NOISE_IV, LS_WID]) localStorage.removeItem(key);
  for (const db of [ENC_DB, SIGNAL_DB, MODEL_DB]) {
    if (await exists(db)) await remove(db);
  }
}

