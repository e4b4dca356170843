/* Backbone-like models and collections, as the app's stores are: attributes readable and
 * writable as properties, on/off/once/trigger (several space-separated events at once),
 * set() fires "change:<name>" with (model, value, previous) and then "change"; a collection
 * re-fires its models' events, and fires "add"/"remove" with (model, collection, options). */

class Events {
  #handlers = new Map();

  on(events, callback, context) {
    if (typeof callback !== "function") return this;
    for (const event of String(events).split(/\s+/).filter(Boolean)) {
      if (!this.#handlers.has(event)) this.#handlers.set(event, []);
      this.#handlers.get(event).push({ callback, context });
    }
    return this;
  }

  once(events, callback, context) {
    const wrapper = (...args) => { this.off(events, wrapper); callback.apply(context || this, args); };
    wrapper.original = callback;
    return this.on(events, wrapper, context);
  }

  off(events, callback) {
    if (events === undefined || events === null) {
      if (callback === undefined) { this.#handlers.clear(); return this; }
      events = [...this.#handlers.keys()].join(" ");
    }
    for (const event of String(events).split(/\s+/).filter(Boolean)) {
      if (callback === undefined) { this.#handlers.delete(event); continue; }
      const kept = (this.#handlers.get(event) || [])
        .filter((h) => h.callback !== callback && h.callback.original !== callback);
      if (kept.length) this.#handlers.set(event, kept); else this.#handlers.delete(event);
    }
    return this;
  }

  trigger(event, ...args) {
    for (const h of [...(this.#handlers.get(event) || [])]) {
      try { h.callback.apply(h.context || this, args); } catch (e) { console.error(e); }
    }
    if (event !== "all") {
      for (const h of [...(this.#handlers.get("all") || [])]) {
        try { h.callback.apply(h.context || this, [event, ...args]); } catch (e) { console.error(e); }
      }
    }
    return this;
  }

  listenTo(other, events, callback) { other.on(events, callback, this); return this; }
  stopListening(other, events, callback) { if (other) other.off(events, callback); return this; }
}

export class Model extends Events {
  #attrs = {};
  #collections = new Set();

  /* `props` names the attributes every model of the class has; others given are added too. */
  static props = [];

  constructor(attrs = {}) {
    super();
    for (const name of this.constructor.props) this.#define(name);
    for (const [name, value] of Object.entries(attrs)) {
      if (name.startsWith("_") || typeof value === "function") continue;
      if (!Object.prototype.hasOwnProperty.call(this, name) && name in this) continue;
      this.#define(name);
      this.#attrs[name] = value;
    }
    this.initialize?.(attrs);
  }

  #define(name) {
    if (Object.prototype.hasOwnProperty.call(this, name)) return;
    Object.defineProperty(this, name, {
      get: () => this.#attrs[name],
      set: (value) => { this.set(name, value); },
      enumerable: true,
      configurable: true,
    });
  }

  get attributes() { return { ...this.#attrs }; }

  get(name) { return this.#attrs[name]; }

  set(name, value, options) {
    if (name !== null && typeof name === "object") {
      for (const [k, v] of Object.entries(name)) this.set(k, v, value);
      return this;
    }
    this.#define(name);
    const previous = this.#attrs[name];
    if (previous === value) return this;
    this.#attrs[name] = value;
    if (!(options && options.silent)) {
      this.trigger("change:" + name, this, value, previous);
      this.trigger("change", this);
    }
    return this;
  }

  unset(name, options) { return this.set(name, undefined, options); }

  serialize() { return { ...this.#attrs }; }

  toJSON() { return this.serialize(); }

  unsafe() { return this; }

  trigger(event, ...args) {
    super.trigger(event, ...args);
    for (const c of [...this.#collections]) c._onModelEvent(event, this, args);
    return this;
  }

  _addTo(collection) { this.#collections.add(collection); }

  _removeFrom(collection) { this.#collections.delete(collection); }
}

function idOf(x) {
  if (x === null || x === undefined) return undefined;
  if (typeof x === "string") return x;
  if (x instanceof Model) return idOf(x.get("id"));
  if (typeof x._serialized === "string") return x._serialized;
  if (typeof x.id === "object" || typeof x.id === "string") return idOf(x.id);
  return String(x);
}

export class Collection extends Events {
  #byId = new Map();
  #models = [];

  constructor(modelClass = Model) {
    super();
    this.modelClass = modelClass;
  }

  get models() { return this.#models; }

  get length() { return this.#models.length; }

  getModelsArray() { return [...this.#models]; }

  toArray() { return this.getModelsArray(); }

  get(id) { return this.#byId.get(idOf(id)); }

  has(id) { return this.#byId.has(idOf(id)); }

  at(index) { return this.#models[index]; }

  forEach(fn) { this.#models.forEach(fn); }

  map(fn) { return this.#models.map(fn); }

  filter(fn) { return this.#models.filter(fn); }

  find(fn) {
    if (typeof fn === "function") return this.#models.find(fn);
    return Promise.resolve(this.get(fn));
  }

  where(attrs) {
    return this.#models.filter((m) => Object.entries(attrs).every(([k, v]) => m.get(k) === v));
  }

  add(items, options = {}) {
    const list = Array.isArray(items) ? items : [items];
    const added = [];
    for (const item of list) {
      const model = item instanceof Model ? item : new this.modelClass(item);
      const id = idOf(model);
      const existing = id === undefined ? undefined : this.#byId.get(id);
      if (existing) {
        if (options.merge && existing !== model) existing.set(model.attributes);
        added.push(existing);
        continue;
      }
      if (id !== undefined) this.#byId.set(id, model);
      this.#models.push(model);
      model._addTo(this);
      added.push(model);
      if (!options.silent) this.trigger("add", model, this, options);
    }
    return Array.isArray(items) ? added : added[0];
  }

  remove(items, options = {}) {
    const list = Array.isArray(items) ? items : [items];
    const removed = [];
    for (const item of list) {
      const model = this.get(item);
      if (!model) continue;
      this.#byId.delete(idOf(model));
      this.#models.splice(this.#models.indexOf(model), 1);
      model._removeFrom(this);
      removed.push(model);
      if (!options.silent) this.trigger("remove", model, this, options);
    }
    return Array.isArray(items) ? removed : removed[0];
  }

  reset(models = [], options = {}) {
    for (const m of this.#models) m._removeFrom(this);
    this.#models = [];
    this.#byId.clear();
    this.add(models, { silent: true });
    if (!options.silent) this.trigger("reset", this, options);
    return this;
  }

  serialize() { return this.#models.map((m) => m.serialize()); }

  _onModelEvent(event, model, args) {
    if (event === "add" || event === "remove" || event === "reset") return;
    this.trigger(event, ...args);
  }
}
