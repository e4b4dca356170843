/* Sandbox WhatsApp Web: the surfaces a host reads (window.Debug, window.require modules, the
 * legacy DOM), driven by the sandbox server over a WebSocket. Messages are applied one at a time,
 * in order, so credentials are written before the state becomes CONNECTED. */
(() => {
  "use strict";

  const boot = JSON.parse(document.getElementById("boot").textContent);
  const DB_NAME = "wawc";
  const STORE = "user";
  const WID_KEY = "last-wid-md";
  const TOKEN_KEY = "WAToken2";
  const PLATFORM = "WEB";

  /* Backbone-style model: attributes readable as properties, on/off/once/trigger,
   * set() fires "change:<name>" with (model, value) and then "change" with (model). */
  class Model {
    constructor(attrs) {
      this._attrs = { ...attrs };
      this._events = {};
      for (const name of Object.keys(attrs)) {
        Object.defineProperty(this, name, { get: () => this._attrs[name], enumerable: true });
      }
    }
    get(name) { return this._attrs[name]; }
    set(name, value, options) {
      if (this._attrs[name] === value) return this;
      this._attrs[name] = value;
      if (!(options && options.silent)) {
        this.trigger("change:" + name, this, value);
        this.trigger("change", this);
      }
      return this;
    }
    on(event, callback, context) {
      if (typeof callback === "function") {
        (this._events[event] = this._events[event] || []).push({ callback, context });
      }
      return this;
    }
    once(event, callback, context) {
      const wrapper = (...args) => { this.off(event, wrapper); callback.apply(context || this, args); };
      return this.on(event, wrapper, context);
    }
    off(event, callback) {
      if (event === undefined) { this._events = {}; return this; }
      if (callback === undefined) { delete this._events[event]; return this; }
      this._events[event] = (this._events[event] || []).filter((h) => h.callback !== callback);
      return this;
    }
    trigger(event, ...args) {
      for (const h of [...(this._events[event] || [])]) {
        try { h.callback.apply(h.context || this, args); } catch (e) { console.error(e); }
      }
      return this;
    }
  }

  const Socket = new Model({ state: "OPENING", hasSynced: false });
  /* Unlink this device, as WhatsApp Web's menu does: the server logs it out (logged_out follows). */
  Socket.logout = () => {
    send({ t: "logout" });
    return Promise.resolve();
  };
  const Conn = new Model({ ref: null, wid: null });
  const Cmd = new Model({});
  let offlinePercent = 0;
  const OfflineMessageHandler = { getOfflineDeliveryProgress: () => offlinePercent };
  const modules = {
    WAWebSocketModel: { Socket },
    WAWebConnModel: { Conn },
    WAWebCmd: { Cmd },
    WAWebOfflineHandler: { OfflineMessageHandler },
  };

  // The page's own keys, made once per page load.
  function randomKey() {
    const bytes = new Uint8Array(32);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode(...bytes));
  }
  const keys = [randomKey(), randomKey(), randomKey()];

  // --- credentials: IndexedDB "wawc"/"user" and localStorage ---

  function request(r) {
    return new Promise((resolve, reject) => {
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  }
  function done(tx) {
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
    });
  }
  function openAt(version) {
    const r = version === undefined ? indexedDB.open(DB_NAME) : indexedDB.open(DB_NAME, version);
    r.onupgradeneeded = () => {
      if (!r.result.objectStoreNames.contains(STORE)) r.result.createObjectStore(STORE, { keyPath: "key" });
    };
    return request(r);
  }
  async function openDb() {
    let db = await openAt(undefined);
    if (!db.objectStoreNames.contains(STORE)) {
      const version = db.version + 1;
      db.close();
      db = await openAt(version);
    }
    return db;
  }
  async function withStore(mode, work) {
    const db = await openDb();
    try {
      const tx = db.transaction(STORE, mode);
      const result = work(tx.objectStore(STORE));
      await done(tx);
      return result;
    } finally {
      db.close();
    }
  }
  /* {wid, token} when IndexedDB and localStorage agree, "partial" when only some is there, else null. */
  async function readCreds() {
    let wid, token;
    await withStore("readonly", (store) => {
      store.get(WID_KEY).onsuccess = (e) => { wid = e.target.result && e.target.result.value; };
      store.get(TOKEN_KEY).onsuccess = (e) => { token = e.target.result && e.target.result.value; };
    });
    const lsWid = localStorage.getItem(WID_KEY);
    const lsToken = localStorage.getItem(TOKEN_KEY);
    if (wid && token && wid === lsWid && token === lsToken) return { wid, token };
    return wid || token || lsWid || lsToken ? "partial" : null;
  }
  async function writeCreds(wid, token) {
    await withStore("readwrite", (store) => {
      store.put({ key: WID_KEY, value: wid });
      store.put({ key: TOKEN_KEY, value: token });
    });
    localStorage.setItem(WID_KEY, wid);
    localStorage.setItem(TOKEN_KEY, token);
  }
  async function clearCreds() {
    await withStore("readwrite", (store) => { store.clear(); });
    localStorage.removeItem(WID_KEY);
    localStorage.removeItem(TOKEN_KEY);
  }

  // --- view ---

  const $ = (id) => document.getElementById(id);
  function showView(id) {
    for (const view of ["startup", "landing", "main", "conflict"]) $(view).hidden = view !== id;
  }
  function qrBox() {
    let box = document.querySelector("div[data-ref]");
    if (!box) {
      box = document.createElement("div");
      box.setAttribute("data-ref", "");
      $("qr-slot").append(box);
    }
    return box;
  }
  function removeQr() {
    const box = document.querySelector("div[data-ref]");
    if (box) box.remove();
  }
  function drawQr(payload) {
    const box = qrBox();
    box.setAttribute("data-ref", payload);
    const canvas = document.createElement("canvas");
    canvas.width = 264;
    canvas.height = 264;
    canvas.setAttribute("aria-label", "Scan me!");
    canvas.setAttribute("role", "img");
    box.replaceChildren(canvas);
    const image = new Image();
    image.onload = () => {
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    };
    image.src = "qr.png?code=" + encodeURIComponent(payload);
    showView("landing");
  }
  function showRetry() {
    const box = qrBox();
    box.setAttribute("data-ref", "");
    const span = document.createElement("span");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Click to reload QR code";
    button.addEventListener("click", () => {
      button.disabled = true;
      send({ t: "retry" });
    });
    span.append(button);
    box.replaceChildren(span);
    showView("landing");
  }
  function setProgress(percent) {
    offlinePercent = percent;
    $("progress").value = percent;
    $("progress-text").textContent = `Loading your chats [${percent}%]`;
  }
  function addMessage(from, body) {
    const row = document.createElement("div");
    row.className = "chat-row";
    row.setAttribute("role", "row");
    row.dataset.from = from;
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = "+" + from;
    const text = document.createElement("span");
    text.className = "body";
    text.textContent = body;
    row.append(who, text);
    $("chat-list").prepend(row);
  }
  function resetSession() {
    removeQr();
    $("chat-list").replaceChildren();
    $("loading").hidden = true;
    setProgress(0);
    Conn.set("ref", null, { silent: true });
    Conn.set("wid", null);
  }

  // --- messages from the server, applied in order ---

  const handlers = {
    async qr(m) {
      drawQr([m.ref, ...keys, PLATFORM].join(","));   // DOM first, so change:ref listeners can read it
      Conn.set("ref", m.ref);
      Socket.set("state", "UNPAIRED");
    },
    async idle() {
      showRetry();
      Conn.set("ref", null, { silent: true });
      Socket.set("state", "UNPAIRED_IDLE");
    },
    async pairing() {
      removeQr();
      Conn.set("ref", null, { silent: true });
      setProgress(0);
      $("loading").hidden = false;
      Socket.set("state", "PAIRING");
    },
    async progress(m) {
      setProgress(m.percent);
      $("loading").hidden = false;
      Cmd.trigger("offline_progress_update");
    },
    async connected(m) {
      await writeCreds(m.wid, m.token);   // stored before CONNECTED: hosts snapshot storage then
      removeQr();
      Conn.set("wid", m.wid);
      showView("main");
      Socket.set("state", "CONNECTED");
    },
    async synced() {
      $("loading").hidden = true;
      Socket.set("hasSynced", true);
    },
    async creds_invalid() {
      await clearCreds();
    },
    async logged_out() {
      await clearCreds();
      resetSession();
      showView("landing");
      Socket.set("hasSynced", false);
      Socket.set("state", "UNPAIRED");
    },
    async conflict() {
      resetSession();
      showView("conflict");
      Socket.set("hasSynced", false);
      Socket.set("state", "CONFLICT");
    },
    async message(m) {
      addMessage(String(m.from), String(m.body));
    },
  };

  let chain = Promise.resolve();
  function enqueue(work) {
    chain = chain.then(work).catch((e) => console.error("sandbox page:", e));
  }

  // --- the connection ---

  let ws = null;
  let stopped = false;   // CONFLICT: never reconnect
  let unloading = false;
  let backoff = 1000;
  window.addEventListener("pagehide", () => { unloading = true; });

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function connect() {
    const url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    ws = socket;
    socket.onopen = () => {
      backoff = 1000;
      enqueue(async () => {
        let creds = await readCreds();
        if (creds === "partial") {
          await clearCreds();
          creds = null;
        }
        if (ws === socket) send({ t: "hello", creds, keys });
      });
    };
    socket.onmessage = (event) => {
      let m;
      try { m = JSON.parse(event.data); } catch (e) { return; }
      if (m.t === "conflict") stopped = true;   // at once, before the close that follows
      const handler = handlers[m.t];
      if (handler) enqueue(() => (ws === socket ? handler(m) : undefined));
    };
    socket.onclose = () => {
      if (ws !== socket || stopped || unloading) return;
      ws = null;
      enqueue(async () => {
        resetSession();
        showView("startup");
        Socket.set("hasSynced", false);
        Socket.set("state", "TIMEOUT");
      });
      setTimeout(() => {
        if (stopped || unloading) return;
        enqueue(async () => { Socket.set("state", "OPENING"); });
        connect();
      }, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  function start() {
    window.require = function require(name) {
      if (Object.prototype.hasOwnProperty.call(modules, name)) return modules[name];
      throw new Error(`Requiring unknown module "${name}"`);
    };
    window.Debug = { VERSION: boot.version };   // the app is "loaded": hosts may probe now
    connect();
  }

  setTimeout(start, Math.max(0, boot.load_delay * 1000));
})();
