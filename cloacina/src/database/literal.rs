//! Values written into SQL as literals rather than bound parameters, where the planner must see them.

use diesel::backend::Backend;
use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Text;
use diesel::QueryResult;

/// The task status `'Pending'` as SQL text. The ready-task indexes are partial (`WHERE status =
/// 'Pending' ...`); SQLite uses them for a bound 'Pending' only by preparing the statement again
/// every time it runs, which costs as much as running it.
#[derive(Debug, Clone, Copy, QueryId)]
pub(crate) struct Pending;

impl Expression for Pending {
    type SqlType = Text;
}

impl<DB: Backend> QueryFragment<DB> for Pending {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("'Pending'");
        Ok(())
    }
}

impl<QS> AppearsOnTable<QS> for Pending {}

impl<QS> SelectableExpression<QS> for Pending {}

impl<GB> ValidGrouping<GB> for Pending {
    type IsAggregate = is_aggregate::Never;
}

#[cfg(test)]
mod tests {
    use crate::model::TaskStatus;

    #[test]
    fn the_literal_is_the_stored_status() {
        assert_eq!(TaskStatus::Pending.as_str(), "Pending");
    }
}
