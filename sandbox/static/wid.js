/* WhatsApp ids (Wid: `user@server`) and message keys (MsgKey), as the app's modules give them. */
import { hex } from "./bytes.js";

const SERVERS = new Set(["c.us", "g.us", "lid", "broadcast", "newsletter", "s.whatsapp.net"]);

export class Wid {
  constructor(serialized) {
    const text = String(serialized);
    const at = text.lastIndexOf("@");
    if (at <= 0) throw new Error(`invalid wid: ${text}`);
    let user = text.slice(0, at);
    let server = text.slice(at + 1);
    if (!SERVERS.has(server)) throw new Error(`invalid wid server: ${text}`);
    if (server === "s.whatsapp.net") server = "c.us";
    let device;
    const colon = user.indexOf(":");
    if (colon >= 0) { device = Number(user.slice(colon + 1)); user = user.slice(0, colon); }
    if ((server === "c.us" || server === "lid") && !/^[0-9]{1,20}$/.test(user)) {
      throw new Error(`invalid wid user: ${text}`);
    }
    this.server = server;
    this.user = user;
    if (device !== undefined) this.device = device;
    this._serialized = device !== undefined ? `${user}:${device}@${server}` : `${user}@${server}`;
    Object.freeze(this);
  }
  toString() { return this._serialized; }
  toJid() { return this.server === "c.us" ? `${this.user}@s.whatsapp.net` : this._serialized; }
  equals(other) { return !!other && String(other._serialized || other) === this._serialized; }
  isUser() { return this.server === "c.us" || this.server === "lid"; }
  isLid() { return this.server === "lid"; }
  isGroup() { return this.server === "g.us"; }
  isBroadcast() { return this.server === "broadcast"; }
  isStatus() { return this.server === "broadcast" && this.user === "status"; }
  isStatusV3() { return this.isStatus(); }
  isNewsletter() { return this.server === "newsletter"; }
  isCompanion() { return this.device !== undefined && this.device !== 0; }
  toUserWid() { return this.device === undefined ? this : new Wid(`${this.user}@${this.server}`); }
}

export function isWidlike(x) {
  return !!x && (x instanceof Wid || typeof x._serialized === "string" ||
    (typeof x.user === "string" && typeof x.server === "string"));
}

export function createWidFromWidLike(x) {
  if (x instanceof Wid) return x;
  if (typeof x === "string") return new Wid(x);
  if (x && typeof x._serialized === "string") return new Wid(x._serialized);
  if (x && typeof x.user === "string" && typeof x.server === "string") return new Wid(`${x.user}@${x.server}`);
  throw new Error("not a wid-like value");
}

export const WidFactory = {
  createWid(x) { return createWidFromWidLike(x); },
  createWidFromWidLike,
  createUserWid(user, server = "c.us") { return new Wid(`${user}@${server}`); },
  asUserWidOrThrow(x) {
    const wid = createWidFromWidLike(x);
    if (!wid.isUser()) throw new Error(`not a user wid: ${wid}`);
    return wid.toUserWid();
  },
  asChatWid(x) { return createWidFromWidLike(x); },
  isWidlike,
  toUserWidOrThrow(x) { return WidFactory.asUserWidOrThrow(x); },
};

/* A message key: {fromMe, remote, id, participant, _serialized}. Made either from
 * {from, to, id, participant, selfDir} as the send path does, or {fromMe, remote, id}. */
export class MsgKey {
  constructor({ fromMe, remote, id, participant, from, to, selfDir }) {
    if (typeof id !== "string" || !id) throw new Error("MsgKey needs an id");
    if (selfDir !== undefined) {
      fromMe = selfDir === "out";
      remote = fromMe ? to : from;
    }
    this.fromMe = !!fromMe;
    this.remote = createWidFromWidLike(remote);
    this.id = id;
    if (participant) this.participant = createWidFromWidLike(participant);
    this._serialized = `${this.fromMe}_${this.remote._serialized}_${this.id}` +
      (this.participant ? `_${this.participant._serialized}` : "");
    Object.freeze(this);
  }
  toString() { return this._serialized; }
  equals(other) { return !!other && String(other._serialized || other) === this._serialized; }
  clone() { return new MsgKey(this); }
  static newId() { return Promise.resolve("3EB0" + hex(10)); }
  static newId_DEPRECATED() { return "3EB0" + hex(10); }
  static fromString(text) {
    const [fromMe, remote, id, participant] = String(text).split("_");
    return new MsgKey({ fromMe: fromMe === "true", remote, id, participant });
  }
}
