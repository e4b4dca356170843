/* The app's connection to the server and its state: WAWebSocketModel.Socket,
 * WAWebConnModel.Conn, WAWebCmd.Cmd, WAWebOfflineHandler; the login check on load, linking,
 * the proof of the stored noise key, the account's loading, logouts and end states. */
import { b64decode, b64encode, importX25519Private } from "./bytes.js";
import { clearLogin, dbMessageKey, freshKeys, readLogin, storeLogin } from "./login.js";
import {
  connectMessaging, onAck, onMessage, resendPending, resetMessaging,
} from "./messaging.js";
import { ModelStorage, createModelStorage } from "./model-storage.js";
import { Model } from "./model.js";
import { Wid } from "./wid.js";

export const Socket = new Model({ state: "OPENING", hasSynced: false });
export const Conn = new Model({ ref: null, wid: null, pushname: null, platform: null, connected: false });
export const Cmd = new Model({});

const offline = { percent: 0, count: 0 };
export const OfflineMessageHandler = {
  getOfflineDeliveryProgress: () => offline.percent,
  getOfflineMessageCount: () => offline.count,
  getHasMessagesToDownload: () => offline.count > 0 && offline.percent < 100,
};

/* What the login-related modules read: the keys in use, the account once linked. */
export const account = {
  keys: null,        // {noise, registration, recoveryToken}: the login's, or a fresh set for a QR
  me: null,          // Wid of the account, once connected
  lid: null,
};

let app = null;

class App {
  constructor({ backend, view, boot }) {
    this.backend = backend;
    this.view = view;
    this.boot = boot;
    this.fresh = null;       // keys for a QR
    this.login = null;       // the stored login, once it opened (or once linked)
    this.linking = false;    // a first link: model-storage fills while the account loads
    this.storage = null;
    this.ws = null;
    this.stopped = false;
    this.unloading = false;
    this.backoff = 1000;
    this.chain = Promise.resolve();
    window.addEventListener("pagehide", () => { this.unloading = true; });
    connectMessaging({ send: (m) => this.send(m), view });
  }

  async start() {
    const [fresh, found] = await Promise.all([freshKeys(), readLogin(this.backend)]);
    this.fresh = fresh;
    if (found.status === "no-salt") {
      // WAWebWorkerEncKeyHelper: "[DB ENC CRITICAL ERROR] null returned for local enc salt",
      // then socketLogout(WebFailEncSalt): the app logs itself out.
      console.error("[DB ENC CRITICAL ERROR] null returned for local enc salt");
      await this.logoutLocally("WebFailEncSalt");
      return;
    }
    if (found.status === "invalid") console.error("stored login could not be opened:", found.reason);
    if (found.status === "ok") this.login = found.login;
    account.keys = this.login || fresh;
    this.connect();
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(msg)); return true; }
    return false;
  }

  enqueue(work) {
    this.chain = this.chain.then(work).catch((e) => console.error("sandbox page:", e));
  }

  connect() {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    this.ws = socket;
    socket.onopen = () => {
      this.backoff = 1000;
      const login = this.login ? { wid: this.login.wid, noise: b64encode(this.login.noise.pubKey) } : null;
      const keys = [
        b64encode(this.fresh.noise.pubKey),
        b64encode(this.fresh.registration.identityKeyPair.pubKey),
        this.fresh.registration.advSecretKey,
      ];
      this.send({ t: "hello", login, keys });
    };
    socket.onmessage = (event) => {
      let m;
      try { m = JSON.parse(event.data); } catch (e) { return; }
      if (m.t === "conflict" || m.t === "state" || m.t === "logged_out") this.stopped = true;
      const handler = this.handlers[m.t];
      if (handler) this.enqueue(() => (this.ws === socket ? handler.call(this, m) : undefined));
    };
    socket.onclose = () => {
      if (this.ws !== socket || this.stopped || this.unloading) return;
      this.ws = null;
      this.enqueue(async () => {
        this.view.reset();
        this.view.show("startup");
        Socket.set("hasSynced", false);
        Socket.set("state", "TIMEOUT");
      });
      setTimeout(() => {
        if (this.stopped || this.unloading) return;
        this.enqueue(async () => { Socket.set("state", "OPENING"); });
        this.connect();
      }, this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }

  qrPayload(ref) {
    const k = this.fresh;
    return [ref, b64encode(k.noise.pubKey), b64encode(k.registration.identityKeyPair.pubKey),
      k.registration.advSecretKey, "WEB"].join(",");
  }

  async logoutLocally(reason) {
    this.stopped = true;
    if (this.ws) this.ws.close();
    Cmd.trigger(reason === "page" ? "logout" : "logout_from_bridge");
    resetMessaging();
    localStorage.clear();
    await clearLogin();
    location.replace("/?post_logout=1");
  }

  get handlers() {
    return {
      async qr(m) {
        account.keys = this.fresh;
        this.view.drawQr(this.qrPayload(m.ref));
        Conn.set("ref", m.ref);
        Socket.set("state", "UNPAIRED");
      },
      async idle() {
        this.view.showRetry(() => Cmd.refreshQR());
        Conn.set("ref", null, { silent: true });
        Socket.set("state", "UNPAIRED_IDLE");
      },
      async pairing() {
        this.view.removeQr();
        Conn.set("ref", null, { silent: true });
        Socket.set("state", "PAIRING");
      },
      async passkey(m) {
        this.view.passkey("Use your passkey to finish linking this device.");
        try {
          await navigator.credentials.get({
            publicKey: {
              rpId: "whatsapp.com",
              challenge: b64decode(m.challenge),
              timeout: 60000,
              userVerification: "required",
              allowCredentials: [],
            },
          });
          this.send({ t: "passkey_failed", error: "the server did not accept the assertion" });
        } catch (e) {
          this.view.passkey("Couldn't verify it's you. Try again on a browser with your passkey.");
          this.send({ t: "passkey_failed", error: `${e.name}: ${e.message}` });
        }
      },
      async paired(m) {
        this.login = await storeLogin(this.backend, this.fresh, m.wid);
        account.keys = this.login;
        this.linking = true;
        await createModelStorage();
        this.send({ t: "stored" });
      },
      async challenge(m) {
        const priv = await importX25519Private(this.login.noise.privKey);
        const eph = await crypto.subtle.importKey("raw", b64decode(m.eph), { name: "X25519" }, true, []);
        const shared = await crypto.subtle.deriveBits({ name: "X25519", public: eph }, priv, 256);
        const key = await crypto.subtle.importKey("raw", shared, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
        const mac = await crypto.subtle.sign("HMAC", key, b64decode(m.nonce));
        this.send({ t: "proof", mac: b64encode(mac) });
      },
      async connected(m) {
        account.me = new Wid(`${m.phone}@c.us`);
        account.lid = m.lid ? new Wid(`${m.lid}@lid`) : null;
        this.storage = new ModelStorage(await dbMessageKey(this.login), account.me._serialized);
        connectMessaging({ me: account.me, lid: account.lid, storage: this.storage });
        this.view.removeQr();
        this.view.show("main");
        Conn.set({ wid: account.me, pushname: m.pushname, platform: m.platform, connected: true });
        Socket.set("state", "CONNECTED");
        resendPending();
      },
      async offline(m) {
        offline.count = m.count;
        offline.percent = 0;
      },
      async progress(m) {
        if (this.linking && m.percent > 0) await this.storage.fillHistory(this.boot.idbMb * 1024 * 1024 / 10);
        offline.percent = m.percent;
        this.view.loading(m.percent);
        Cmd.trigger("offline_progress_update_from_bridge");
        if (m.percent >= 100) Cmd.trigger("offline_delivery_end_from_bridge");
      },
      async synced() {
        this.linking = false;
        this.view.hideLoading();
        Socket.set("hasSynced", true);
      },
      async creds_invalid() {
        console.error("the server did not accept the stored login; a QR code follows");
        this.login = null;
        account.keys = this.fresh;
      },
      async logged_out(m) {
        await this.logoutLocally(m.reason);
      },
      async conflict() {
        this.view.reset();
        this.view.ended("CONFLICT");
        Socket.set("hasSynced", false);
        Socket.set("state", "CONFLICT");
      },
      async state(m) {
        this.view.ended(m.state);
        Socket.set("state", m.state);
      },
      async msg(m) {
        await onMessage(m.msg);
      },
      async ack(m) {
        onAck(m);
      },
    };
  }
}

/* Socket.logout(): unlink this device, as the app's menu does (the page reloads logged out). */
Socket.logout = () => {
  if (!app || !app.send({ t: "logout" })) return app ? app.logoutLocally("page") : Promise.resolve();
  return Promise.resolve();
};
/* Socket.takeover(): after CONFLICT, use the login here again (the other window stops). */
Socket.takeover = () => {
  if (!app || Socket.state !== "CONFLICT" || !app.login) return;
  app.stopped = false;
  Socket.set("state", "OPENING");
  app.connect();
};
Cmd.refreshQR = () => {
  if (Socket.state === "UNPAIRED_IDLE" && app) app.send({ t: "retry" });
};

export function startApp(parts) {
  app = new App(parts);
  return app.start();
}
