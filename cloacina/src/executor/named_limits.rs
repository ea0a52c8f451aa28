//! Named limits from the executor's side: storing, deleting and listing them for every worker.

use super::UnifiedExecutor;
use crate::database::named_limits::LimitInfo;
use crate::error::Result;
use crate::model::limits::Limit;

impl UnifiedExecutor {
    /// Creates or changes a limit, for every worker on the database at once.
    pub async fn set_limit(&self, limit: Limit) -> Result<()> {
        self.inner.db.put_limit(limit).await
    }

    /// Deletes the limit `name`.
    pub async fn delete_limit(&self, name: &str) -> Result<()> {
        self.inner.db.remove_limit(name.to_string()).await
    }

    /// Every limit in the database, by name, with the attempts holding each concrete key now.
    pub async fn list_limits(&self) -> Result<Vec<LimitInfo>> {
        self.inner.db.list_limits().await
    }
}
