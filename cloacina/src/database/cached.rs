//! Statements run for every task, written as SQL text so diesel caches them prepared: diesel
//! prepares every UPDATE it builds anew each time it runs, which was a sixth of a task's cost.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use std::marker::PhantomData;

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Integer, Nullable, Text, Timestamp};
use diesel::{QueryResult, RunQueryDsl};

/// One bound value of a [`Cached`] statement.
pub(crate) enum Bind<'a> {
    Text(Option<&'a str>),
    Int(i32),
    Time(Option<NaiveDateTime>),
}

/// SQL text with a bound value between each two of its parts, cached by diesel under its text
/// (the same on every backend: diesel writes each bind as `?` or `$n`).
pub(crate) struct Cached<'a> {
    parts: &'static [&'static str],
    binds: Vec<Bind<'a>>,
}

impl<'a> Cached<'a> {
    /// The statement `parts[0] bind[0] parts[1] ... bind[n-1] parts[n]`.
    pub(crate) fn new(parts: &'static [&'static str], binds: Vec<Bind<'a>>) -> Self {
        assert_eq!(parts.len(), binds.len() + 1, "one bind between two parts");
        Self { parts, binds }
    }
}

impl QueryId for Cached<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for Cached<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Integer> + HasSqlType<Timestamp>,
    str: ToSql<Text, DB>,
    i32: ToSql<Integer, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql(self.parts[0]);
        for (bind, part) in self.binds.iter().zip(&self.parts[1..]) {
            match bind {
                Bind::Text(value) => out.push_bind_param::<Nullable<Text>, _>(value)?,
                Bind::Int(value) => out.push_bind_param::<Integer, _>(value)?,
                Bind::Time(value) => out.push_bind_param::<Nullable<Timestamp>, _>(value)?,
            }
            out.push_sql(part);
        }
        Ok(())
    }
}

impl<Conn> RunQueryDsl<Conn> for Cached<'_> {}

/// A [`Cached`] statement that returns rows of SQL type `ST` (a `SELECT`, or `... RETURNING`).
pub(crate) struct Returning<'a, ST>(Cached<'a>, PhantomData<ST>);

impl<'a> Cached<'a> {
    /// This statement, read as returning rows of SQL type `ST`.
    pub(crate) fn returning<ST>(self) -> Returning<'a, ST> {
        Returning(self, PhantomData)
    }
}

impl<ST> QueryId for Returning<'_, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<ST> Query for Returning<'_, ST> {
    type SqlType = ST;
}

impl<DB: Backend, ST> QueryFragment<DB> for Returning<'_, ST>
where
    for<'a> Cached<'a>: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

impl<Conn, ST> RunQueryDsl<Conn> for Returning<'_, ST> {}
