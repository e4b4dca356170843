/* Media as the app's modules handle it, on the path whatsapp-web.js sends media by:
 * WAWebMediaOpaqueData, WAWebPrepRawMedia, WAWebMediaStorage, WAWebMmsMediaTypes,
 * WAWebMediaDataUtils, WAWebMediaInMemoryBlobCache, WAWebMediaMmsV4Upload; and the download a
 * received message's downloadMedia() does. Files travel encrypted as WhatsApp's are: HKDF of a
 * 32-byte media key, AES-256-CBC, a 10-byte HMAC (sandbox/media.py says more). */
import { b64decode, b64encode, concat, equalBytes, randomBytes } from "./bytes.js";
import { Model } from "./model.js";

const INFO = {
  image: "WhatsApp Image Keys", sticker: "WhatsApp Image Keys",
  video: "WhatsApp Video Keys", gif: "WhatsApp Video Keys",
  audio: "WhatsApp Audio Keys", ptt: "WhatsApp Audio Keys",
  document: "WhatsApp Document Keys",
};

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

async function mediaKeys(mediaKey, kind) {
  const base = await crypto.subtle.importKey("raw", mediaKey, "HKDF", false, ["deriveBits"]);
  const bits = new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: new TextEncoder().encode(INFO[kind]) },
    base, 112 * 8));
  return { iv: bits.slice(0, 16), cipherKey: bits.slice(16, 48), macKey: bits.slice(48, 80) };
}

async function mac(macKey, data) {
  const key = await crypto.subtle.importKey("raw", macKey, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, data)).slice(0, 10);
}

export async function encryptMedia(plain, mediaKey, kind) {
  const { iv, cipherKey, macKey } = await mediaKeys(mediaKey, kind);
  const aes = await crypto.subtle.importKey("raw", cipherKey, "AES-CBC", false, ["encrypt"]);
  const enc = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aes, plain));
  return concat(enc, await mac(macKey, concat(iv, enc)));
}

export async function decryptMedia(file, mediaKey, kind) {
  const { iv, cipherKey, macKey } = await mediaKeys(mediaKey, kind);
  const enc = file.slice(0, file.length - 10);
  if (!equalBytes(file.slice(file.length - 10), await mac(macKey, concat(iv, enc)))) {
    throw new Error("media: the file's MAC does not verify");
  }
  const aes = await crypto.subtle.importKey("raw", cipherKey, "AES-CBC", false, ["decrypt"]);
  return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CBC", iv }, aes, enc));
}

/* WAWebMediaOpaqueData: a blob the app hands around (the module is the class). */
export class OpaqueData {
  #blob;
  #url = null;
  constructor(blob) { this.#blob = blob; }
  static async createFromData(data, type) {
    if (data instanceof OpaqueData) return data;
    if (data instanceof Blob && (!type || data.type === type)) return new OpaqueData(data);
    return new OpaqueData(new Blob([data], { type: type || (data && data.type) || "" }));
  }
  get type() { return this.#blob.type; }
  get size() { return this.#blob.size; }
  get filename() { return this.#blob instanceof File ? this.#blob.name : undefined; }
  url() { if (!this.#url) this.#url = URL.createObjectURL(this.#blob); return this.#url; }
  autorelease() {
    const url = this.#url;
    if (url) setTimeout(() => URL.revokeObjectURL(url), 60000);
  }
  release() { if (this.#url) { URL.revokeObjectURL(this.#url); this.#url = null; } }
  formData() { return this.#blob; }
  forceToBlob() { return this.#blob; }
  arrayBuffer() { return this.#blob.arrayBuffer(); }
}

export class MediaData extends Model {
  static props = [
    "type", "mimetype", "filehash", "size", "mediaBlob", "isGif", "preview", "filename",
    "fullWidth", "fullHeight", "aspectRatio", "mediaStage", "renderableUrl", "duration", "waveform",
  ];
  toJSON() { return this.serialize(); }
}

export class MediaObject extends Model {
  static props = ["filehash", "type", "size", "mimetype", "mediaBlob", "contentInfo", "mediaStage"];
  consolidate(json) {
    for (const [k, v] of Object.entries(json || {})) if (v !== undefined) this.set(k, v);
    return this;
  }
}

const mediaObjects = new Map();

export const MediaStorage = {
  getOrCreateMediaObject(filehash) {
    if (!mediaObjects.has(filehash)) {
      mediaObjects.set(filehash, new MediaObject({ filehash, contentInfo: {}, mediaStage: "INIT" }));
    }
    return mediaObjects.get(filehash);
  },
  getMediaObject(filehash) { return mediaObjects.get(filehash); },
};

export const InMemoryMediaBlobCache = (() => {
  const blobs = new Map();
  return {
    put(filehash, blob) { blobs.set(filehash, blob); },
    get(filehash) { return blobs.get(filehash); },
    has(filehash) { return blobs.has(filehash); },
    delete(filehash) { return blobs.delete(filehash); },
  };
})();

function kindOf(mimetype, { asDocument, asSticker, isPtt }) {
  if (asDocument) return "document";
  if (/^image\//.test(mimetype)) return asSticker ? "sticker" : "image";
  if (/^video\//.test(mimetype)) return "video";
  if (/^audio\//.test(mimetype)) return isPtt ? "ptt" : "audio";
  return "document";
}

async function thumbnail(blob) {
  const bitmap = await createImageBitmap(blob);
  const scale = Math.min(1, 100 / Math.max(bitmap.width, bitmap.height));
  const canvas = new OffscreenCanvas(Math.max(1, Math.round(bitmap.width * scale)),
    Math.max(1, Math.round(bitmap.height * scale)));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const jpeg = await canvas.convertToBlob({ type: "image/jpeg", quality: 0.5 });
  const out = { width: bitmap.width, height: bitmap.height, preview: b64encode(new Uint8Array(await jpeg.arrayBuffer())) };
  bitmap.close();
  return out;
}

/* WAWebPrepRawMedia.prepRawMedia(opaqueData, params) -> {waitForPrep(): Promise<MediaData>} */
export function prepRawMedia(opaque, params = {}) {
  const prep = (async () => {
    const blob = opaque.forceToBlob();
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const type = kindOf(opaque.type, params);
    const data = new MediaData({
      type, mimetype: opaque.type, filehash: b64encode(await sha256(bytes)), size: bytes.length,
      mediaBlob: opaque, isGif: !!params.asGif, filename: opaque.filename, mediaStage: "PREPARING",
    });
    if (type === "image" || type === "sticker") {
      let thumb;
      try { thumb = await thumbnail(blob); } catch (e) { throw new Error("media-fault: the image does not decode"); }
      data.set({ preview: thumb.preview, fullWidth: thumb.width, fullHeight: thumb.height,
        aspectRatio: thumb.width / thumb.height });
    }
    data.set("mediaStage", "RESOLVED");
    return data;
  })();
  return { waitForPrep: () => prep };
}

export const MmsMediaTypes = {
  msgToMediaType({ type, isGif }) {
    if (type === "video" && isGif) return "gif";
    return type in INFO ? type : "document";
  },
  castToV4(type) { return type; },
  MEDIA_TYPES: Object.fromEntries(Object.keys(INFO).map((k) => [k.toUpperCase(), k])),
};

export const MediaDataUtils = {
  shouldUseMediaCache(type) { return type === "image" || type === "sticker" || type === "ptt"; },
};

/* WAWebMediaMmsV4Upload.uploadMedia: encrypt under a new media key, upload, say where. */
export async function uploadMedia({ mimetype, mediaObject, mediaType }) {
  const blob = mediaObject.mediaBlob instanceof OpaqueData
    ? mediaObject.mediaBlob.forceToBlob() : mediaObject.mediaBlob;
  if (!(blob instanceof Blob)) throw new Error("upload failed: the media object has no data");
  const kind = mediaType in INFO ? mediaType : "document";
  const mediaKey = randomBytes(32);
  const file = await encryptMedia(new Uint8Array(await blob.arrayBuffer()), mediaKey, kind);
  const response = await fetch(`/mms/${kind}`, {
    method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
  });
  if (!response.ok) throw new Error(`upload failed: HTTP ${response.status}`);
  const answer = await response.json();
  const encFilehash = b64encode(await sha256(file));
  mediaObject.set({ mimetype, mediaStage: "RESOLVED" });
  return {
    mediaEntry: {
      mmsUrl: answer.url, deprecatedMms3Url: answer.url, directPath: answer.direct_path,
      mediaKey: b64encode(mediaKey), mediaKeyTimestamp: Math.floor(Date.now() / 1000),
      encFilehash, uploadHash: encFilehash, sidecar: undefined, firstFrameSidecar: undefined,
      handle: null,
    },
  };
}

export async function uploadUnencryptedMedia() {
  throw new Error("upload failed: channels are not modelled by this page");
}

/* A received message's downloadMedia(): fetch, verify, decrypt, cache. */
/* WAWebDownloadManager.downloadManager: fetch a media file by its direct path, check it against
 * its hashes and decrypt it (whatsapp-web.js's downloadMedia calls downloadAndMaybeDecrypt). */
export const downloadManager = {
  async downloadAndMaybeDecrypt({ directPath, encFilehash, filehash, mediaKey, type, signal }) {
    if (!directPath || !mediaKey) throw new Error("downloadAndMaybeDecrypt: no directPath or mediaKey");
    const response = await fetch(directPath, { signal });
    if (!response.ok) {
      const error = new Error(`media download answered ${response.status}`);
      error.status = response.status;
      throw error;
    }
    const file = new Uint8Array(await response.arrayBuffer());
    if (encFilehash && b64encode(await sha256(file)) !== encFilehash) {
      throw new Error("media: the file's hash does not match encFilehash");
    }
    const plain = await decryptMedia(file, b64decode(mediaKey), type in INFO ? type : "document");
    if (filehash && b64encode(await sha256(plain)) !== filehash) {
      throw new Error("media: the decrypted file's hash does not match filehash");
    }
    return plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.byteLength);
  },
};

export async function downloadMsgMedia(msg) {
  const mediaData = msg.mediaData;
  if (!mediaData || !msg.directPath || !msg.mediaKey) return;
  if (mediaData.mediaStage === "RESOLVED" && InMemoryMediaBlobCache.has(msg.filehash)) return;
  mediaData.mediaStage = "FETCHING";
  try {
    const response = await fetch(msg.directPath);
    if (!response.ok) { mediaData.mediaStage = "ERROR_MISSING"; return; }
    const plain = await decryptMedia(new Uint8Array(await response.arrayBuffer()),
      b64decode(msg.mediaKey), msg.type in INFO ? msg.type : "document");
    if (msg.filehash && b64encode(await sha256(plain)) !== msg.filehash) {
      mediaData.mediaStage = "ERROR_INVALID_HASH";
      return;
    }
    const blob = new Blob([plain], { type: msg.mimetype || "application/octet-stream" });
    InMemoryMediaBlobCache.put(msg.filehash, blob);
    const object = MediaStorage.getOrCreateMediaObject(msg.filehash);
    object.consolidate({ type: msg.type, size: plain.length, mimetype: msg.mimetype,
      mediaBlob: new OpaqueData(blob), mediaStage: "RESOLVED" });
    msg.set("mediaObject", object);
    mediaData.mediaStage = "RESOLVED";
  } catch (e) {
    console.error("media download failed:", e);
    mediaData.mediaStage = "ERROR_TOO_OLD";
  }
}
