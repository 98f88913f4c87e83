//! Templates built from an ISO in the portal, and what the nodes offer to build them from.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::states::{BuildState, column};
use super::{Db, DbError};
use crate::vm_key::VmKey;

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRow {
    /// The cluster and VMID of the VM being built.
    pub key: VmKey,
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub iso: String,
    /// `linux`, `windows11` or `other`.
    pub os: String,
    pub built_by: Option<i64>,
    /// The builder's username.
    pub builder: Option<String>,
    pub created_at: i64,
    pub state: BuildState,
    pub error: String,
}

/// A build as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild<'a> {
    pub node: &'a str,
    pub name: &'a str,
    pub iso: &'a str,
    pub os: &'a str,
    pub built_by: i64,
    pub now: i64,
}

/// What a node offers to build a template with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeSources {
    pub node: String,
    pub online: bool,
    /// ISO images: volume id and size.
    pub isos: Vec<(String, u64)>,
    /// Active storages that hold VM disks.
    pub storages: Vec<String>,
}

const BUILD_COLUMNS: &str = "b.cluster_id, b.vmid, b.node, b.name, b.iso, b.os, b.built_by, u.username AS builder, \
     b.created_at, b.state, b.error";

fn build_from_row(row: &AnyRow) -> Result<BuildRow, sqlx::Error> {
    let vmid = row.try_get::<i64, _>("vmid")? as u32;
    Ok(BuildRow {
        key: VmKey::new(row.try_get("cluster_id")?, vmid),
        vmid,
        node: row.try_get("node")?,
        name: row.try_get("name")?,
        iso: row.try_get("iso")?,
        os: row.try_get("os")?,
        built_by: row.try_get("built_by")?,
        builder: row.try_get("builder")?,
        created_at: row.try_get("created_at")?,
        state: column(row, "state", BuildState::parse)?,
        error: row.try_get("error")?,
    })
}

impl Db {
    /// Reserves a VMID of `range` for a build (see `db::vmids`). Returns its key.
    pub async fn reserve_build(
        &self,
        build: &NewBuild<'_>,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<VmKey, DbError> {
        let mut tx = self.write_tx().await?;
        let cluster = super::nodes::node_cluster(&mut tx, build.node).await?;
        let vmid = super::vmids::VmidPicker::new(&mut tx, range)
            .await?
            .pick(&mut tx, cluster)
            .await?
            .ok_or_else(|| DbError::Conflict("no free VM id is left".into()))?;
        sqlx::query(
            "INSERT INTO template_builds (cluster_id, vmid, node, name, iso, os, built_by, created_at, state) \
             VALUES ($8, $1, $2, $3, $4, $5, $6, $7, 'creating')",
        )
        .bind(i64::from(vmid))
        .bind(build.node)
        .bind(build.name)
        .bind(build.iso)
        .bind(build.os)
        .bind(build.built_by)
        .bind(build.now)
        .bind(cluster)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(VmKey::new(cluster, vmid))
    }

    pub async fn set_build_state(
        &self,
        vm: VmKey,
        state: BuildState,
        error: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE template_builds SET state = $1, error = $2 WHERE cluster_id = $3 AND vmid = $4",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn build(&self, vm: VmKey) -> Result<Option<BuildRow>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM template_builds b \
             LEFT JOIN users u ON u.id = b.built_by WHERE b.cluster_id = $1 AND b.vmid = $2"
        ))
        .bind(vm.cluster)
        .bind(i64::from(vm.vmid))
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(build_from_row).transpose()?)
    }

    /// Builds newest first: all of them, or one user's.
    pub async fn builds(&self, built_by: Option<i64>) -> Result<Vec<BuildRow>, DbError> {
        let only = if built_by.is_some() {
            "WHERE b.built_by = $1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM template_builds b \
             LEFT JOIN users u ON u.id = b.built_by {only} \
             ORDER BY b.created_at DESC, b.vmid DESC"
        );
        let mut query = sqlx::query(&sql);
        if let Some(user) = built_by {
            query = query.bind(user);
        }
        let rows = query.fetch_all(self.pool()).await?;
        Ok(rows.iter().map(build_from_row).collect::<Result<_, _>>()?)
    }

    /// For every enrolled node: its ISO images and the active storages that hold VM disks.
    pub async fn build_sources(&self) -> Result<Vec<NodeSources>, DbError> {
        let nodes = self.list_nodes().await?;
        let isos = sqlx::query(
            "SELECT n.name, i.volid, i.size_bytes FROM isos i JOIN nodes n ON n.id = i.node_id \
             ORDER BY i.volid",
        )
        .fetch_all(self.pool())
        .await?;
        let storages = sqlx::query(
            "SELECT n.name, s.storage, s.content FROM storages s JOIN nodes n ON n.id = s.node_id \
             WHERE s.active <> 0 ORDER BY s.storage",
        )
        .fetch_all(self.pool())
        .await?;
        let mut sources = Vec::new();
        for node in nodes.into_iter().filter(|node| node.revoked_at.is_none()) {
            let mut source = NodeSources {
                node: node.name.clone(),
                online: node.online,
                isos: Vec::new(),
                storages: Vec::new(),
            };
            for row in &isos {
                if row.try_get::<String, _>("name")? == node.name {
                    source.isos.push((
                        row.try_get("volid")?,
                        row.try_get::<i64, _>("size_bytes")? as u64,
                    ));
                }
            }
            for row in &storages {
                let content: String = row.try_get("content")?;
                if row.try_get::<String, _>("name")? == node.name
                    && content.split(',').any(|kind| kind == "images")
                {
                    source.storages.push(row.try_get("storage")?);
                }
            }
            sources.push(source);
        }
        Ok(sources)
    }
}
