/* IndexedDB as promises; each call opens and closes its own connection, so a database can be
 * deleted at any time. Shared by the page and its backend worker. */

export function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

export function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}

/* Open `name`, creating missing stores: `stores` maps store name to its options. */
export async function open(name, stores) {
  const missing = (db) => Object.keys(stores).filter((s) => !db.objectStoreNames.contains(s));
  let db = await upgrade(name, undefined, stores);
  if (missing(db).length) {
    const version = db.version + 1;
    db.close();
    db = await upgrade(name, version, stores);
  }
  return db;
}

function upgrade(name, version, stores) {
  const r = version === undefined ? indexedDB.open(name) : indexedDB.open(name, version);
  r.onupgradeneeded = () => {
    for (const [store, options] of Object.entries(stores)) {
      if (!r.result.objectStoreNames.contains(store)) r.result.createObjectStore(store, options);
    }
  };
  r.onblocked = () => console.warn("indexedDB: upgrade of", name, "blocked by another connection");
  return request(r).then((db) => {
    db.onversionchange = () => db.close();
    return db;
  });
}

/* Run `work(stores)` in one transaction over `names`; resolves to work's result once committed. */
export async function withStores(dbName, stores, names, mode, work) {
  const db = await open(dbName, stores);
  try {
    const tx = db.transaction(names, mode);
    const result = await work(Object.fromEntries(names.map((n) => [n, tx.objectStore(n)])));
    await done(tx);
    return result;
  } finally {
    db.close();
  }
}

/* Whether a database exists, without creating it. */
export async function exists(name) {
  const all = await indexedDB.databases();
  return all.some((d) => d.name === name);
}

export function remove(name) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.deleteDatabase(name);
    r.onsuccess = () => resolve();
    r.onerror = () => reject(r.error);
    r.onblocked = () => console.warn("indexedDB: deleting", name, "waits for open connections");
  });
}
