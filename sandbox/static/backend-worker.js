/* The app's backend worker (WAWebBackendWorkerV2 on the real page): it makes and uses keys the
 * page's own realm never sees. Here: the fts_hmac_keys and worm_ear_keys records of
 * wawc_db_enc, and the signal-storage key under which the identity key pair and the ADV secret
 * are kept. The login depends on the latter: without it the identity cannot be read. */
import { b64decode, b64encode, randomBytes, toBytes } from "./bytes.js";
import { withStores } from "./idb.js";
import { ENC_DB, ENC_STORES, SIGNAL_DB, SIGNAL_STORES } from "./stores.js";

const PREKEYS = 30;
const KEY_LIFETIME_MS = 400 * 24 * 3600 * 1000;

async function hkdfRecord(usages) {
  const key = await crypto.subtle.importKey("raw", randomBytes(128), { name: "HKDF" }, false, usages);
  return { key, _expiration: Date.now() + KEY_LIFETIME_MS };
}

async function seal(key, data) {
  const iv = randomBytes(12);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, toBytes(data)));
  return { iv, ct };
}

async function open(key, box) {
  if (!box || !(box.iv instanceof Uint8Array) || !(box.ct instanceof Uint8Array)) {
    throw new Error("signal-storage: a sealed value is missing");
  }
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: box.iv }, key, box.ct));
}

/* At link: the worker's keys, and the registration sealed under the signal-storage key. */
async function createLogin({ registration, wid }) {
  const fts = await hkdfRecord(["deriveBits"]);
  const worm = await hkdfRecord(["deriveBits"]);
  await withStores(ENC_DB, ENC_STORES, ["fts_hmac_keys", "worm_ear_keys"], "readwrite", async (s) => {
    s.fts_hmac_keys.add(fts);
    s.worm_ear_keys.add(worm);
  });
  const signalKey = await crypto.subtle.importKey(
    "raw", randomBytes(32), { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  const { identityKeyPair, registrationId, advSecretKey } = registration;
  const sealed = new Map([
    ["identityPubKey", await seal(signalKey, identityKeyPair.pubKey)],
    ["identityPrivKey", await seal(signalKey, identityKeyPair.privKey)],
    ["advSecretKey", await seal(signalKey, b64decode(advSecretKey))],
    ["registrationId", registrationId],
  ]);
  const prekeys = [];
  for (let keyId = 1; keyId <= PREKEYS; keyId++) {
    prekeys.push({ keyId, keyPair: await seal(signalKey, randomBytes(64)), uploaded: true });
  }
  const signed = { keyId: 1, keyPair: await seal(signalKey, randomBytes(64)), signature: randomBytes(64) };
  await withStores(SIGNAL_DB, SIGNAL_STORES, Object.keys(SIGNAL_STORES), "readwrite", async (s) => {
    s["signal-meta-store"].put({ key: "signal-enc-key", value: signalKey });
    s["signal-meta-store"].put({ key: "registration", value: sealed });
    s["identity-store"].put({ identifier: wid, identityKey: toBytes(identityKeyPair.pubKey) });
    for (const p of prekeys) s["prekey-store"].put(p);
    s["signed-prekey-store"].put(signed);
  });
  return true;
}

/* On load: the registration, if the signal-storage key still opens it. */
async function getRegistrationInfo() {
  const [key, sealed] = await withStores(
    SIGNAL_DB, SIGNAL_STORES, ["signal-meta-store"], "readonly", async (s) => {
      const store = s["signal-meta-store"];
      const k = store.get("signal-enc-key"), r = store.get("registration");
      await new Promise((ok) => { r.onsuccess = ok; r.onerror = ok; });
      return [k.result && k.result.value, r.result && r.result.value];
    });
  if (!(key instanceof CryptoKey)) throw new Error("signal-storage: no encryption key");
  if (!(sealed instanceof Map)) throw new Error("signal-storage: no registration");
  const pubKey = await open(key, sealed.get("identityPubKey"));
  const privKey = await open(key, sealed.get("identityPrivKey"));
  const adv = await open(key, sealed.get("advSecretKey"));
  return {
    registrationId: sealed.get("registrationId"),
    identityKeyPair: { pubKey: pubKey.buffer, privKey: privKey.buffer },
    advSecretKey: b64encode(adv),
  };
}

const ops = { createLogin, getRegistrationInfo };

self.onmessage = async (event) => {
  const { id, op, args } = event.data || {};
  try {
    if (!Object.prototype.hasOwnProperty.call(ops, op)) throw new Error("unknown op " + op);
    self.postMessage({ id, ok: true, result: await ops[op](args || {}) });
  } catch (e) {
    self.postMessage({ id, ok: false, error: String(e && e.message || e) });
  }
};
