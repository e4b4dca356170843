/* The account's collections (WAWebCollections: Msg, Chat, Contact...) and the actions hosts call
 * to send: WAWebFindChatAction.findOrCreateLatestChat, WAWebSendMsgChatAction.addAndSendMsgToChat
 * (keys from WAWebMsgKey.newId()). Messages arrive over the page's WebSocket and are added to
 * Msg with isNewMsg; a sent message's ack moves 0 -> 1 (server) -> 2 (device) -> 3 (read). */
import { Collection, Model } from "./model.js";
import { downloadMsgMedia, MediaData } from "./media.js";
import { MsgKey, Wid, createWidFromWidLike } from "./wid.js";

export const ACK = { ERROR: -1, PENDING: 0, SERVER: 1, DEVICE: 2, READ: 3, PLAYED: 4 };
const MEDIA_FIELDS = ["directPath", "mediaKey", "filehash", "encFilehash", "mediaKeyTimestamp"];

export class MsgModel extends Model {
  static props = [
    "id", "body", "type", "t", "from", "to", "author", "ack", "isNewMsg", "self", "local",
    "caption", "mimetype", "filename", "size", "filehash", "encFilehash", "mediaKey",
    "mediaKeyTimestamp", "directPath", "clientUrl", "deprecatedMms3Url", "isViewOnce",
    "notifyName", "star", "broadcast", "isForwarded", "forwardingScore", "hasReaction",
    "mentionedJidList", "groupMentions", "quotedMsg", "mediaData", "mediaObject", "subtype",
    "isEphemeral", "isStatusV3", "links",
  ];

  initialize() {
    if (!(this.id instanceof MsgKey)) this.set("id", new MsgKey(this.id), { silent: true });
    for (const name of ["from", "to", "author"]) {
      const v = this.get(name);
      if (v && !(v instanceof Wid)) this.set(name, createWidFromWidLike(v), { silent: true });
    }
    if (this.isEphemeral === undefined) this.set("isEphemeral", false, { silent: true });
    if (this.isStatusV3 === undefined) this.set("isStatusV3", false, { silent: true });
  }

  downloadMedia() { return downloadMsgMedia(this); }
  canReply() { return true; }
  msgContextInfo() { return { quotedMsg: this.serialize(), quotedStanzaID: this.id.id, quotedRemoteJid: this.id.remote }; }
  updateAck(ack) { if (ack === ACK.ERROR || ack > (this.ack ?? ACK.PENDING)) this.set("ack", ack); }
  avParams() { return {}; }
  get chat() { return Chat.get(this.id.remote); }
}

export class ContactModel extends Model {
  static props = [
    "id", "name", "shortName", "pushname", "type", "isBusiness", "isEnterprise",
    "isContactBlocked", "verifiedName", "verifiedLevel", "statusMute", "phoneNumber",
  ];
  get formattedName() { return this.name || this.pushname || "+" + this.id.user; }
}

export class ChatModel extends Model {
  static props = [
    "id", "name", "t", "unreadCount", "archive", "pin", "isReadOnly", "muteExpiration", "mute",
    "notSpam", "ephemeralDuration", "lastReceivedKey", "msgs", "contact", "groupMetadata",
    "newsletterMetadata", "isGroup",
  ];
  initialize() {
    if (!(this.id instanceof Wid)) this.set("id", createWidFromWidLike(this.id), { silent: true });
    if (!(this.msgs instanceof Collection)) this.set("msgs", new Collection(MsgModel), { silent: true });
    this.set({
      unreadCount: this.unreadCount ?? 0, archive: false, pin: 0, isReadOnly: false,
      muteExpiration: 0, mute: { expiration: 0 }, notSpam: true, isGroup: this.id.isGroup(),
    }, { silent: true });
  }
  get formattedTitle() { return this.name || (this.contact && this.contact.formattedName) || "+" + this.id.user; }
}

class MsgCollection extends Collection {
  getMessagesById(ids) {
    return Promise.resolve({ messages: (ids || []).map((id) => this.get(id)).filter(Boolean) });
  }
}

class ContactCollection extends Collection {
  find(id) {
    if (typeof id === "function") return super.find(id);
    const wid = createWidFromWidLike(id);
    return Promise.resolve(this.get(wid) || this.add({ id: wid, type: "in", isBusiness: false,
      isEnterprise: false, isContactBlocked: false, statusMute: false, verifiedLevel: 0 }));
  }
}

class ChatCollection extends Collection {
  find(id) {
    if (typeof id === "function") return super.find(id);
    return findOrCreateLatestChat(createWidFromWidLike(id)).then((r) => r.chat);
  }
}

class GroupMetadataCollection extends Collection {
  update() { return Promise.resolve(); }
}

class BusinessProfileCollection extends Collection {
  find(id) { return Promise.resolve(this.get(id) || new Model({ id, profileOptions: undefined })); }
}

export const Msg = new MsgCollection(MsgModel);
export const Chat = new ChatCollection(ChatModel);
export const Contact = new ContactCollection(ContactModel);

export const Collections = {
  Msg, Chat, Contact,
  Label: new Collection(Model),
  Blocklist: new Collection(Model),
  GroupMetadata: new GroupMetadataCollection(Model),
  BusinessProfile: new BusinessProfileCollection(Model),
  WAWebCallCollection: new Collection(Model),
  StatusV3: new Collection(Model),
};

/* What the rest of the page gives: the WebSocket, who we are, where messages are kept. */
const context = { send: () => false, me: null, lid: null, storage: null, view: null };
const pendingSends = new Map();

export function connectMessaging(parts) { Object.assign(context, parts); }

/* WAWebFindChatAction.findOrCreateLatestChat(wid, context) -> {chat, created} */
export async function findOrCreateLatestChat(wid) {
  const chatWid = createWidFromWidLike(wid).toUserWid();
  if (!chatWid.isUser() && !chatWid.isGroup()) throw new Error(`findOrCreateLatestChat: ${chatWid} is not a chat`);
  const existing = Chat.get(chatWid);
  if (existing) return { chat: existing, created: false };
  const contact = await Contact.find(chatWid);
  const chat = Chat.add({ id: chatWid, t: Math.floor(Date.now() / 1000), contact });
  return { chat, created: true };
}

function wire(msg) {
  const out = {
    id: msg.id.id, to: msg.id.remote._serialized, type: msg.type, body: msg.body || "",
  };
  for (const name of ["caption", "mimetype", "filename", "size"]) {
    if (msg[name] !== undefined && msg[name] !== null) out[name] = msg[name];
  }
  if (msg.directPath) out.media = Object.fromEntries(MEDIA_FIELDS.map((k) => [k, msg[k]]));
  return out;
}

function keep(msg) {
  if (context.storage) context.storage.putMessage(msg).catch((e) => console.error("model-storage:", e));
}

/* WAWebSendMsgChatAction.addAndSendMsgToChat(chat, msgData) -> [msgPromise, sendResultPromise] */
export function addAndSendMsgToChat(chat, msgData) {
  if (!(chat instanceof ChatModel)) throw new TypeError("addAndSendMsgToChat: not a chat model");
  const msg = new MsgModel({ ack: ACK.PENDING, isNewMsg: true, local: true, self: "out", ...msgData });
  let settle;
  const result = new Promise((resolve) => { settle = resolve; });
  pendingSends.set(msg.id._serialized, { msg, settle });
  chat.msgs.add(msg);
  Msg.add(msg);
  chat.set("t", msg.t);
  keep(msg);
  context.send({ t: "send", msg: wire(msg) });
  return [Promise.resolve(msg), result];
}

/* After a reconnection: what never reached the server goes now. */
export function resendPending() {
  for (const { msg } of pendingSends.values()) {
    if (msg.ack === ACK.PENDING) context.send({ t: "send", msg: wire(msg) });
  }
}

export function onAck({ id, remote, ack }) {
  const key = `true_${remote}_${id}`;
  const msg = Msg.get(key);
  if (msg) msg.updateAck(ack);
  const pending = pendingSends.get(key);
  if (pending && (ack >= ACK.SERVER || ack === ACK.ERROR)) {
    pendingSends.delete(key);
    pending.settle({ messageSendResult: ack === ACK.ERROR ? "ERROR" : "OK" });
  }
}

/* A message from the server: the account's own from elsewhere (fromMe) or someone's. */
export async function onMessage(m) {
  const key = new MsgKey({ fromMe: m.fromMe, remote: m.remote, id: m.id });
  if (Msg.get(key)) return;
  const { chat } = await findOrCreateLatestChat(key.remote);
  const attrs = {
    id: key, body: m.body, type: m.type, t: m.t, from: m.from, to: m.to,
    ack: ACK.SERVER, isNewMsg: true, self: m.fromMe ? "out" : "in",
    notifyName: m.fromMe ? undefined : `+${new Wid(m.from).user}`,
  };
  for (const name of ["caption", "mimetype", "filename", "size"]) if (m[name] !== undefined) attrs[name] = m[name];
  if (m.media) {
    Object.assign(attrs, m.media, { clientUrl: m.media.directPath, deprecatedMms3Url: m.media.directPath });
    attrs.mediaData = new MediaData({ type: m.type, mimetype: m.mimetype, filehash: m.media.filehash,
      size: m.size, filename: m.filename, mediaStage: "INIT" });
  }
  const msg = new MsgModel(attrs);
  chat.msgs.add(msg);
  chat.set("t", msg.t);
  if (!m.fromMe) {
    chat.set("lastReceivedKey", key);
    chat.set("unreadCount", (chat.unreadCount || 0) + 1);
    if (context.view) context.view.addMessage(new Wid(m.from).user, m.type === "chat" ? m.body : m.caption || m.type);
  }
  Msg.add(msg);
  keep(msg);
}

/* WAWebUpdateUnreadChatAction.sendSeen({chat}) */
export async function sendSeen(arg) {
  const chat = arg && arg.chat ? arg.chat : arg;
  if (chat instanceof ChatModel) chat.set("unreadCount", 0);
  return true;
}

export function resetMessaging() {
  for (const c of Object.values(Collections)) c.reset([], { silent: true });
  pendingSends.clear();
}
