//! The embedded database: an SQLite file of products and orders, the report query, and a count
//! of the report queries SQLite really ran, taken from SQLite's own trace hook.

use crate::BoxError;
use crate::latch::until;
use indicatif::ProgressBar;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{Connection, InterruptHandle, OpenFlags, params};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// Bumped whenever the schema or the generated data change, so that an old file is re-seeded.
const SCHEMA_VERSION: i64 = 1;

/// Products in the catalogue; each belongs to one category (`id % categories`).
const PRODUCTS: i64 = 2_000;

/// The report: revenue per product for one category, over every order ever placed.
///
/// `orders` has no index on `product_id` (it is the append-only fact table; a reporting query
/// scans it), so every run reads the whole table: the "expensive shared aggregate" that a cache
/// stampede multiplies. The leading comment makes the statement easy to pick out of the trace.
pub const REPORT_SQL: &str = "/* stampede:report */ \
    SELECT p.id, p.name, COUNT(*) AS orders, SUM(o.quantity) AS units, \
           SUM(o.quantity * o.unit_price) AS revenue, AVG(o.unit_price) AS avg_price \
    FROM orders AS o JOIN products AS p ON p.id = o.product_id \
    WHERE p.category = ?1 \
    GROUP BY p.id ORDER BY revenue DESC, p.id LIMIT 10";

/// The sales of a set of products: one row per product that has orders. The products' ids are
/// bound as `?1, ?2, ...` into the `IN (...)` list (at most 999, SQLite's default limit); like
/// the report, it scans `orders`, so one query costs about the same for 1 id or 50.
pub const PRODUCTS_SQL_PREFIX: &str = "/* stampede:products */ \
    SELECT product_id, COUNT(*), SUM(quantity), SUM(quantity * unit_price) \
    FROM orders WHERE product_id IN (";

/// One product's sales, from a products query.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductTotal {
    /// Orders of the product.
    pub orders: i64,
    /// Units sold.
    pub units: i64,
    /// Units times their price, summed.
    pub revenue: f64,
}

/// How a database is generated: the same shape is reused from disk, another one is re-seeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Rows in `orders`.
    pub orders: i64,
    /// Distinct product categories (the report's key).
    pub categories: i64,
}

impl Default for Shape {
    fn default() -> Self {
        Self { orders: 250_000, categories: 50 }
    }
}

/// One row of the report: a product's sales.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductSales {
    /// The product's id.
    pub product_id: i64,
    /// The product's name.
    pub name: String,
    /// Orders placed for it.
    pub orders: i64,
    /// Units sold.
    pub units: i64,
    /// Revenue: the sum of quantity × unit price.
    pub revenue: f64,
    /// Mean unit price paid.
    pub avg_price: f64,
}

/// The report for one category: its ten best-selling products by revenue.
pub type Report = Vec<ProductSales>;

/// Why a report query gave no report.
#[derive(Debug)]
pub enum QueryError {
    /// The caller that wanted the report went away and the query was interrupted (or never
    /// started).
    Interrupted,
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl QueryError {
    /// Whether the query was interrupted because nobody wanted its result any more.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Self::Interrupted)
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Interrupted => f.write_str("the report query was interrupted"),
            Self::Sqlite(e) => write!(f, "the report query failed: {e}"),
        }
    }
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Interrupted => None,
            Self::Sqlite(e) => Some(e),
        }
    }
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::OperationInterrupted) => Self::Interrupted,
            _ => Self::Sqlite(e),
        }
    }
}

/// The report statements SQLite started, as its trace hook saw them: in total and per key.
#[derive(Debug, Default)]
pub struct QueryLog {
    total: AtomicU64,
    /// Products queries (`IN (...)` over a set of product ids) started, and the ids they asked.
    products: AtomicU64,
    product_ids: AtomicU64,
    per_key: Mutex<BTreeMap<i64, u64>>,
    /// Notified after each count.
    counted: Notify,
}

impl QueryLog {
    /// Report statements started since the database was opened.
    pub fn total(&self) -> u64 {
        self.total.load(SeqCst)
    }

    /// Products queries started since the database was opened, and the product ids they asked
    /// for in all.
    pub fn products(&self) -> (u64, u64) {
        (self.products.load(SeqCst), self.product_ids.load(SeqCst))
    }

    /// Report statements started per category since the database was opened.
    pub fn per_key(&self) -> BTreeMap<i64, u64> {
        self.per_key.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until SQLite has started `total` report statements since the database was opened:
    /// a burst's requests wait on it for the queries of their flights' leaders to be running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn started(&self, total: u64) {
        until(&self.counted, || self.total() >= total).await;
    }

    /// Called by SQLite (through rusqlite's `trace_v2`) as each statement starts running.
    fn on_statement(&self, event: TraceEvent<'_>) {
        let TraceEvent::Stmt(stmt, sql) = event else {
            return;
        };
        if sql.starts_with(PRODUCTS_SQL_PREFIX) {
            // One bound parameter (`?N`) per product id.
            self.product_ids.fetch_add(sql.matches('?').count() as u64, SeqCst);
            self.products.fetch_add(1, SeqCst);
            return;
        }
        if sql != REPORT_SQL {
            return;
        }
        // The expanded text has the bound key in place of `?1`.
        let key = stmt
            .expanded_sql()
            .and_then(|text| {
                let (_, rest) = text.split_once("p.category = ")?;
                let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
                digits.parse::<i64>().ok()
            })
            .unwrap_or(-1);
        // Counted per key first: whoever sees the total sees the key's count too.
        *self.per_key.lock().unwrap_or_else(PoisonError::into_inner).entry(key).or_default() += 1;
        self.total.fetch_add(1, SeqCst);
        self.counted.notify_waiters();
    }
}

/// A cancellation handle shared by one report query and the future waiting for it: cancelling
/// interrupts the query if it is running, and stops it from starting if it is not.
#[derive(Debug, Default)]
pub struct Ticket {
    state: Mutex<TicketState>,
}

#[derive(Default)]
struct TicketState {
    cancelled: bool,
    /// Set only while the query runs, so that a late cancel never interrupts a connection
    /// that went back to the pool and now runs someone else's query.
    running: Option<InterruptHandle>,
}

impl fmt::Debug for TicketState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketState")
            .field("cancelled", &self.cancelled)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl Ticket {
    /// Cancels the query: interrupts it if it is running, or keeps it from starting.
    pub fn cancel(&self) {
        let mut state = self.lock();
        state.cancelled = true;
        if let Some(handle) = &state.running {
            handle.interrupt();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TicketState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self, conn: &Connection) -> Result<(), QueryError> {
        let mut state = self.lock();
        if state.cancelled {
            return Err(QueryError::Interrupted);
        }
        state.running = Some(conn.get_interrupt_handle());
        Ok(())
    }

    fn finish(&self) {
        self.lock().running = None;
    }
}

/// The database: a file, a pool of read connections, and the log of report queries.
///
/// The pool is unbounded (a connection is opened whenever none is idle), so that concurrent
/// requests really run concurrent queries, as they would against a server with enough
/// connections; idle connections are kept for the next burst.
pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    log: Arc<QueryLog>,
    running: AtomicUsize,
    /// Notified when `running` drops to 0.
    went_idle: Notify,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("queries", &self.log.total())
            .finish_non_exhaustive()
    }
}

/// What [`Db::open_or_seed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seeded {
    /// The file already held a database of this shape.
    Reused,
    /// The file was (re)generated.
    Created,
}

impl Db {
    /// Opens the database at `path`, generating it first (with a progress bar on `progress`)
    /// unless it already holds a database of this `shape`.
    pub fn open_or_seed(
        path: &Path,
        shape: Shape,
        progress: &ProgressBar,
    ) -> Result<(Self, Seeded), BoxError> {
        let seeded = if stored_shape(path) == Some(shape) {
            Seeded::Reused
        } else {
            seed(path, shape, progress)?;
            Seeded::Created
        };
        let db = Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            log: Arc::default(),
            running: AtomicUsize::new(0),
            went_idle: Notify::new(),
        };
        Ok((db, seeded))
    }

    /// The report queries SQLite has run on this database's connections.
    pub fn log(&self) -> &QueryLog {
        &self.log
    }

    /// Runs the report for `category` on a pooled connection, blocking the thread. `ticket`
    /// can interrupt it from another thread.
    pub fn report(&self, category: i64, ticket: &Ticket) -> Result<Report, QueryError> {
        self.running.fetch_add(1, SeqCst);
        let _running = Running(self);
        let conn = self.checkout()?;
        let result = ticket.start(&conn).and_then(|()| {
            let report = run_report(&conn, category);
            ticket.finish();
            Ok(report?)
        });
        self.checkin(conn);
        result
    }

    /// The sales of the products `ids` (those that have orders), blocking the thread: one
    /// `IN (...)` query on a pooled connection.
    pub fn product_totals(&self, ids: &[i64]) -> Result<Vec<(i64, ProductTotal)>, QueryError> {
        self.running.fetch_add(1, SeqCst);
        let _running = Running(self);
        let conn = self.checkout()?;
        let result = run_products(&conn, ids);
        self.checkin(conn);
        Ok(result?)
    }

    /// How many report calls are on a thread right now.
    pub fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// Waits until no report call is on a thread: a query whose callers all left may still be
    /// unwinding on the blocking pool after its burst ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn idle(&self) {
        until(&self.went_idle, || self.running() == 0).await;
    }

    fn checkout(&self) -> rusqlite::Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn checkin(&self, conn: Connection) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&self.path, flags)?;
        // Map the file: every connection reads the same OS pages instead of copying the table
        // into a private page cache of its own.
        conn.pragma_update(None, "mmap_size", 1_i64 << 30)?;
        let log = self.log.clone();
        conn.trace_v2(
            TraceEventCodes::SQLITE_TRACE_STMT,
            Some(move |event: TraceEvent<'_>| log.on_statement(event)),
        )?;
        Ok(conn)
    }
}

/// Counts a report call out again, however it ends.
struct Running<'a>(&'a Db);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, SeqCst) == 1 {
            self.0.went_idle.notify_waiters();
        }
    }
}

fn run_report(conn: &Connection, category: i64) -> rusqlite::Result<Report> {
    let mut stmt = conn.prepare_cached(REPORT_SQL)?;
    let rows = stmt.query_map([category], |row| {
        Ok(ProductSales {
            product_id: row.get(0)?,
            name: row.get(1)?,
            orders: row.get(2)?,
            units: row.get(3)?,
            revenue: row.get(4)?,
            avg_price: row.get(5)?,
        })
    })?;
    rows.collect()
}

fn run_products(conn: &Connection, ids: &[i64]) -> rusqlite::Result<Vec<(i64, ProductTotal)>> {
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("?{i}")).collect();
    let sql = format!("{PRODUCTS_SQL_PREFIX}{}) GROUP BY product_id", placeholders.join(", "));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(ids), |row| {
        Ok((row.get(0)?, ProductTotal { orders: row.get(1)?, units: row.get(2)?, revenue: row.get(3)? }))
    })?;
    rows.collect()
}

/// The shape recorded in the file, if it is a complete database of this version.
fn stored_shape(path: &Path) -> Option<Shape> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let get = |key: &str| -> Option<i64> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).ok()
    };
    if get("schema_version")? != SCHEMA_VERSION || get("products")? != PRODUCTS {
        return None;
    }
    Some(Shape { orders: get("orders")?, categories: get("categories")? })
}

/// Generates the database in a scratch file beside `path` and renames it into place, so that
/// an interrupted run never leaves a half-seeded database behind.
fn seed(path: &Path, shape: Shape, progress: &ProgressBar) -> Result<(), BoxError> {
    let scratch = path.with_extension("seeding");
    let _ = std::fs::remove_file(&scratch);
    let mut conn = Connection::open(&scratch)?;
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE products (id INTEGER PRIMARY KEY, category INTEGER NOT NULL,
                                name TEXT NOT NULL, list_price REAL NOT NULL);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL,
                              customer_id INTEGER NOT NULL, quantity INTEGER NOT NULL,
                              unit_price REAL NOT NULL, placed_at INTEGER NOT NULL);",
    )?;
    progress.set_length(u64::try_from(PRODUCTS + shape.orders).unwrap_or(0));
    let mut rng = SplitMix64(0x5eed);
    let tx = conn.transaction()?;
    {
        let mut product = tx.prepare("INSERT INTO products VALUES (?1, ?2, ?3, ?4)")?;
        let mut prices = Vec::with_capacity(PRODUCTS as usize);
        for id in 0..PRODUCTS {
            let price = 1.0 + (rng.next() % 50_000) as f64 / 100.0;
            prices.push(price);
            let name = format!("product-{id:05}");
            product.execute(params![id, id % shape.categories, name, price])?;
        }
        progress.inc(PRODUCTS as u64);
        let mut order = tx.prepare("INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
        for id in 0..shape.orders {
            let product_id = (rng.next() % PRODUCTS as u64) as i64;
            let customer = (rng.next() % 100_000) as i64;
            let quantity = 1 + (rng.next() % 5) as i64;
            // Up to 20 % off the list price.
            let discount = 1.0 - (rng.next() % 21) as f64 / 100.0;
            let unit_price = (prices[product_id as usize] * discount * 100.0).round() / 100.0;
            let placed_at = 1_700_000_000 + (rng.next() % 31_536_000) as i64;
            order.execute(params![id, product_id, customer, quantity, unit_price, placed_at])?;
            if id % 10_000 == 0 {
                progress.set_position((PRODUCTS + id) as u64);
            }
        }
        let mut meta = tx.prepare("INSERT INTO meta VALUES (?1, ?2)")?;
        meta.execute(params!["schema_version", SCHEMA_VERSION])?;
        meta.execute(params!["products", PRODUCTS])?;
        meta.execute(params!["orders", shape.orders])?;
        meta.execute(params!["categories", shape.categories])?;
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA journal_mode = DELETE; ANALYZE;")?;
    drop(conn);
    progress.finish_and_clear();
    std::fs::rename(&scratch, path)?;
    Ok(())
}

/// A small deterministic generator (SplitMix64), so every seeding yields the same data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
