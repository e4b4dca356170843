/* Where the app keeps its login and its data: localStorage keys and IndexedDB databases. */

export const LS_SALT = "WAWebEncKeySalt";
export const LS_NOISE = "WANoiseInfo";
export const LS_NOISE_IV = "WANoiseInfoIv";
export const LS_WID = "last-wid-md";

export const ENC_DB = "wawc_db_enc";
export const ENC_STORES = {
  keys: { keyPath: "id", autoIncrement: true },
  fts_hmac_keys: { keyPath: "id", autoIncrement: true },
  worm_ear_keys: { keyPath: "id", autoIncrement: true },
};

export const SIGNAL_DB = "signal-storage";
export const SIGNAL_STORES = {
  "signal-meta-store": { keyPath: "key" },
  "identity-store": { keyPath: "identifier" },
  "prekey-store": { keyPath: "keyId" },
  "signed-prekey-store": { keyPath: "keyId" },
  "session-store": { keyPath: "address" },
  "sender-key-store": { keyPath: "id" },
};

export const MODEL_DB = "model-storage";
/* About a hundred object stores, as the real model-storage has: chats, messages, contacts and
 * the rest of an account's state. */
export const MODEL_STORE_NAMES = [
  "message", "chat", "contact", "group-metadata", "participant", "presence", "status",
  "label", "label-association", "blocklist", "privacy", "profile-pic-thumb", "sticker",
  "sticker-pack", "recent-sticker", "favorite-sticker", "recent-emoji", "reaction", "poll-vote",
  "message-info", "message-association", "message-orphan", "orphan-revoke", "order",
  "product", "product-catalog", "business-profile", "quick-reply", "keyword", "agent",
  "community", "subgroup-suggestion", "newsletter", "newsletter-metadata", "channel-message",
  "call-log", "call-participant", "device-list", "lid-pn-mapping", "username",
  "user-prefs", "settings", "sync-action", "sync-key", "sync-collection-version",
  "sync-mutation", "pending-mutation", "history-sync-chunk", "history-sync-notification",
  "unjoined-subgroup-metadata", "group-invite", "membership-approval-request",
  "ephemeral-setting", "disappearing-mode", "pinned-message", "starred-message",
  "archived-chat", "muted-chat", "chat-filter", "chat-folder", "chat-theme", "wallpaper",
  "media-key", "media-cache", "media-upload", "media-download", "thumbnail", "link-preview",
  "vcard", "location", "live-location", "event-response", "scheduled-call", "bot-profile",
  "bot-message-secret", "ai-thread", "payment-transaction", "payment-method",
  "payment-background", "commerce-setting", "cart", "order-details", "invoice",
  "status-v3", "status-privacy", "status-mute", "broadcast-list", "broadcast-recipient",
  "verified-name", "tos-notice", "marketing-message", "ad-context", "ctwa-context",
  "web-session", "companion-device", "linked-device", "key-index", "signal-identity-cache",
  "server-props", "ab-props", "wam-buffer",
];
export const MODEL_STORES = Object.fromEntries(
  MODEL_STORE_NAMES.map((name) => [name, { keyPath: "id" }]));
