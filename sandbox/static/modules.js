/* The app's modules by the names hosts require them by, registered in waves as the real page's
 * bundles load: some right after Debug.VERSION, some over the next few hundred ms, the rest only
 * after the page's load event. */
import { b64decode, b64encode, toBytes } from "./bytes.js";
import { onRegister, register, registerDebug } from "./loader.js";
import { Cmd, Conn, OfflineMessageHandler, Socket, account } from "./connection.js";
import {
  InMemoryMediaBlobCache, MediaDataUtils, MediaStorage, MmsMediaTypes, OpaqueData, downloadManager,
  prepRawMedia,
  uploadMedia, uploadUnencryptedMedia,
} from "./media.js";
import {
  Collections, addAndSendMsgToChat, findOrCreateLatestChat, sendSeen,
} from "./messaging.js";
import { MsgKey, Wid, WidFactory } from "./wid.js";

const DEVICE_PLATFORM = "WEB";

function linkPattern() { return /\bhttps?:\/\/[^\s<>"]+|\bwww\.[^\s<>"]+/gi; }

function links(text) {
  return String(text || "").match(linkPattern()) || [];
}

const noiseInfo = {
  async get() {
    const k = account.keys;
    return k && {
      staticKeyPair: { pubKey: toBytes(k.noise.pubKey).slice().buffer, privKey: toBytes(k.noise.privKey).slice().buffer },
      recoveryToken: toBytes(k.recoveryToken).slice().buffer,
    };
  },
};

const signalStore = {
  async getRegistrationInfo() {
    const r = account.keys && account.keys.registration;
    return r && {
      registrationId: r.registrationId,
      identityKeyPair: {
        pubKey: toBytes(r.identityKeyPair.pubKey).slice().buffer,
        privKey: toBytes(r.identityKeyPair.privKey).slice().buffer,
      },
    };
  },
};

const me = {
  getMaybeMePnUser: () => account.me || undefined,
  getMaybeMeLidUser: () => account.lid || undefined,
  getMeUser: () => { if (!account.me) throw new Error("not logged in"); return account.me; },
  getMaybeMeUser: () => account.me || undefined,
  isMeAccount: (w) => !!account.me && String(w && (w._serialized || w)).split("@")[0].split(":")[0] === account.me.user,
};

const contactGetters = {
  getIsMe: (c) => me.isMeAccount(c.id),
  getIsUser: (c) => c.id.isUser(),
  getIsGroup: (c) => c.id.isGroup(),
  getIsWAContact: (c) => c.id.isUser(),
  getIsMyContact: (c) => c.type === "in" && !!c.name,
  getUserid: (c) => c.id.user,
  getVerifiedName: (c) => c.verifiedName,
  getVerifiedLevel: (c) => c.verifiedLevel,
  getStatusMute: (c) => !!c.statusMute,
  getName: (c) => c.name,
  getShortName: (c) => c.shortName,
  getPushname: (c) => c.pushname,
  getIsEnterprise: (c) => !!c.isEnterprise,
  getFormattedName: (c) => c.formattedName,
};

const notModelled = (what) => () => { throw new Error(`${what} is not modelled by this page`); };

/* [name, exports, defaultExport] */
const WAVES = [
  [
    ["WAWebSocketModel", { Socket }],
    ["WAWebConnModel", { Conn }],
    ["WAWebCmd", { Cmd }],
    ["WABase64", { encodeB64: (d) => b64encode(d), decodeB64: (s) => b64decode(s).buffer }],
    ["WAWebMiscBrowserUtils", { info: () => ({ name: "Chrome", version: navigator.userAgent.match(/Chrome\/(\d+)/)?.[1], os: "Linux" }) }],
  ],
  [
    ["WAWebOfflineHandler", { OfflineMessageHandler }],
    ["WAWebUserPrefsInfoStore", { waNoiseInfo: noiseInfo }],
    ["WAWebCompanionRegClientUtils", { DEVICE_PLATFORM }],
    ["WAWebAdvSignatureApi", { getADVSignedDeviceIdentity: notModelled("ADV device identity") }],
    ["WAWebAltDeviceLinkingApi", {
      setPairingType: notModelled("linking with a pairing code"),
      initializeAltDeviceLinking: notModelled("linking with a pairing code"),
      startAltLinkingFlow: notModelled("linking with a pairing code"),
      initializeQRLinking: async () => undefined,
    }],
    ["WAWebLaunchSocketUtils", { refreshQR: () => Cmd.refreshQR() }],
    ["WAWebWid", {}, Wid],
    ["WAWebWidFactory", WidFactory],
    ["WAWebMsgKey", {}, MsgKey],
    ["WALinkify", {
      findLink: (t) => { const l = links(t)[0]; return l ? { href: l, url: l, suspiciousCharacters: new Set() } : null; },
      findLinks: (t) => links(t).map((l) => ({ href: l, url: l, suspiciousCharacters: new Set() })),
    }],
    ["WAWebStreamModel", { Stream: { available: false, markAvailable() { this.available = true; }, markUnavailable() { this.available = false; } } }],
    ["WAWebChatGetters", {
      getIsNewsletter: (c) => c.id.isNewsletter(), getIsBroadcast: (c) => c.id.isBroadcast(),
      getIsGroup: (c) => c.id.isGroup(), getIsUser: (c) => c.id.isUser(),
    }],
    ["WAWebContactGetters", contactGetters],
    ["WAWebFrontendContactGetters", { getIsMyContact: contactGetters.getIsMyContact }],
    ["WAWebApiContact", { getAlternateUserWid: () => null, getPhoneNumber: () => null }],
    ["WAWebSyncGatingUtils", { isPlaceholderMessageResendEnabled: () => false }],
  ],
  [
    ["WAWebSignalStoreApi", { waSignalStore: signalStore }],
    ["WAWebUserPrefsMultiDevice", { getADVSecretKey: () => account.keys && account.keys.registration.advSecretKey }],
    ["WAWebUserPrefsMeUser", me],
    ["WAWebCollections", Collections],
    ["WAWebFindChatAction", { findOrCreateLatestChat }],
    ["WAWebSendMsgChatAction", { addAndSendMsgToChat }],
    ["WAWebUpdateUnreadChatAction", { sendSeen }],
    ["WAWebGetEphemeralFieldsMsgActionsUtils", { getEphemeralFields: () => ({}) }],
    ["WAWebMediaOpaqueData", {}, OpaqueData],
    ["WAWebPrepRawMedia", { prepRawMedia }],
    ["WAWebMediaStorage", MediaStorage],
    ["WAWebMmsMediaTypes", MmsMediaTypes],
    ["WAWebMediaDataUtils", MediaDataUtils],
    ["WAWebMediaInMemoryBlobCache", { InMemoryMediaBlobCache }],
    ["WAWebMediaMmsV4Upload", { uploadMedia, uploadUnencryptedMedia }],
    ["WAWebDownloadManager", { downloadManager }],
    ["WAWebMsgReply", { canReplyMsg: () => true }],
  ],
];

export const MODULE_NAMES = WAVES.flat().map(([name]) => name);

function shuffled(list) {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function spread(list, from, span) {
  const order = shuffled(list);
  return Promise.all(order.map((entry, i) => new Promise((resolve) => {
    setTimeout(() => { register(entry[0], entry[1], entry[2]); resolve(); },
      from + Math.round((span * (i + 1)) / order.length));
  })));
}

function loaded() {
  return document.readyState === "complete"
    ? Promise.resolve()
    : new Promise((resolve) => window.addEventListener("load", () => resolve(), { once: true }));
}

/* Register the first wave now, the second over 300 ms, the third from 100 to 500 ms after the
 * page's load event. Resolves when every module is registered. */
export async function registerModules() {
  registerDebug();
  for (const [name, exports, defaultExport] of WAVES[0]) register(name, exports, defaultExport);
  await spread(WAVES[1], 20, 300);
  await loaded();
  await spread(WAVES[2], 100, 400);
}

export { onRegister };
