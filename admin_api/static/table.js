// A table that holds thousands of rows and renders one page of them: search,
// sort by any column (header buttons, keyboard reachable), paging. Cells are
// text (textContent), never HTML: names come from devices. A re-render keeps
// the keyboard focus on the same control of the same row while that row is shown.
export class DataTable {
  // columns: [{id, label, text(row) -> string, value(row) -> sortable, cls, width,
  //            sortable (default true), title(row), render(td, row), when(rows) -> shown}]
  constructor({ table, pager, columns, key, pageSize, emptyText, sort }) {
    this.table = table;
    this.pager = pager;
    this.allColumns = columns;
    this.key = key;
    this.pageSize = pageSize || 100;
    this.emptyText = emptyText;
    this.rows = [];
    this.view = [];
    this.filter = null;
    this.sort = sort || { id: columns[0].id, dir: 1 };
    this.page = 0;
    this.shownIds = "";
    if (pager) {
      pager.querySelector(".prev").addEventListener("click", () => this.go(this.page - 1));
      pager.querySelector(".next").addEventListener("click", () => this.go(this.page + 1));
    }
  }

  setRows(rows) { this.rows = rows; this.recompute(); }
  setFilter(fn) { this.filter = fn; this.page = 0; this.recompute(); }

  sortBy(id, dir) {
    if (dir === undefined) dir = this.sort.id === id ? -this.sort.dir : 1;
    this.sort = { id, dir };
    this.page = 0;
    this.recompute();
  }

  go(page) {
    const pages = Math.max(1, Math.ceil(this.view.length / this.pageSize));
    this.page = Math.min(Math.max(0, page), pages - 1);
    this.render();
  }

  recompute() {
    const col = this.allColumns.find((c) => c.id === this.sort.id) || this.allColumns[0];
    const value = col.value || col.text;
    const rows = this.filter ? this.rows.filter(this.filter) : this.rows.slice();
    const keyed = rows.map((r) => [value(r), r]);
    const dir = this.sort.dir;
    keyed.sort((a, b) => (a[0] < b[0] ? -dir : a[0] > b[0] ? dir : 0));
    this.view = keyed.map((k) => k[1]);
    this.go(this.page);
  }

  columns() {
    return this.allColumns.filter((c) => !c.when || c.when(this.rows));
  }

  renderHead(columns) {
    const ids = columns.map((c) => c.id).join(",");
    if (ids === this.shownIds) return;
    this.shownIds = ids;
    const tr = document.createElement("tr");
    for (const c of columns) {
      const th = document.createElement("th");
      th.scope = "col";
      if (c.width) th.style.width = c.width;
      if (c.cls) th.className = c.cls;
      if (c.sortable === false) {
        const span = document.createElement("span");
        span.className = "sr-only";
        span.textContent = c.label || c.id;
        th.appendChild(span);
      } else {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = c.label;
        b.dataset.sort = c.id;
        b.addEventListener("click", () => this.sortBy(c.id));
        th.appendChild(b);
      }
      tr.appendChild(th);
    }
    this.table.tHead.replaceChildren(tr);
  }

  render() {
    const columns = this.columns();
    this.renderHead(columns);
    for (const th of this.table.tHead.rows[0].cells) {
      const b = th.querySelector("button");
      if (!b) continue;
      th.setAttribute("aria-sort", b.dataset.sort === this.sort.id
        ? (this.sort.dir > 0 ? "ascending" : "descending") : "none");
    }
    const start = this.page * this.pageSize;
    const rows = this.view.slice(start, start + this.pageSize);
    const focus = this.focused();
    const frag = document.createDocumentFragment();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.className = "empty";
      td.colSpan = columns.length;
      td.textContent = this.rows.length ? "nothing matches" : this.emptyText;
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.name = this.key(row);
      for (const c of columns) {
        const td = document.createElement("td");
        td.dataset.label = c.label || "";
        td.dataset.col = c.id;
        if (c.cls) td.className = c.cls;
        if (c.render) c.render(td, row);
        else td.textContent = c.text(row);
        if (c.title) td.title = c.title(row);
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    this.table.tBodies[0].replaceChildren(frag);
    if (focus) this.refocus(focus);
    if (this.pager) {
      const pages = Math.max(1, Math.ceil(this.view.length / this.pageSize));
      this.pager.hidden = this.view.length <= this.pageSize;
      this.pager.querySelector(".page").textContent = "page " + (this.page + 1) + " of " + pages
        + " (" + (this.view.length ? start + 1 : 0) + "–" + (start + rows.length) + " of "
        + this.view.length.toLocaleString() + ")";
      this.pager.querySelector(".prev").disabled = this.page === 0;
      this.pager.querySelector(".next").disabled = this.page >= pages - 1;
    }
  }

  // The focused control of the body, as row key + column + class (or null).
  focused() {
    const el = document.activeElement;
    if (!el || !this.table.tBodies[0].contains(el)) return null;
    const tr = el.closest("tr"), td = el.closest("td");
    if (!tr || !td) return null;
    return { name: tr.dataset.name, col: td.dataset.col, cls: el.className };
  }

  refocus({ name, col, cls }) {
    for (const tr of this.table.tBodies[0].rows) {
      if (tr.dataset.name !== name) continue;
      for (const td of tr.cells) {
        if (td.dataset.col !== col) continue;
        const el = [...td.querySelectorAll("button, a, input")].find((e) => e.className === cls);
        if (el) el.focus({ preventScroll: true });
        return;
      }
      return;
    }
  }
}
