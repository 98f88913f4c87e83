//! Usage reports: a class's (its teachers and admins) and the site's (admins), as pages with
//! a chart, as CSV and as JSON.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::HubState;
use crate::domain::usage::{self, ClassUsage, SiteUsage};
use crate::web::error::{ApiError, AppError, PageError};
use crate::web::identity::{CurrentUser, RequireAdmin};
use crate::web::render::{Layout, Page};

/// `?days=` of a class report.
#[derive(Debug, Deserialize)]
struct DaysQuery {
    days: Option<u32>,
}

impl DaysQuery {
    fn days(&self) -> Result<u32, AppError> {
        match self.days {
            None => Ok(usage::DEFAULT_DAYS),
            Some(days) if (1..=usage::MAX_DAYS).contains(&days) => Ok(days),
            Some(_) => Err(AppError::BadRequest(format!(
                "days must be 1 to {}",
                usage::MAX_DAYS
            ))),
        }
    }
}

/// `?months=` (and for CSV `?by=class|node`) of a site report.
#[derive(Debug, Deserialize)]
struct SiteQuery {
    months: Option<u32>,
    #[serde(default)]
    by: Option<String>,
}

impl SiteQuery {
    fn months(&self) -> Result<u32, AppError> {
        match self.months {
            None => Ok(usage::DEFAULT_MONTHS),
            Some(months) if (1..=usage::MAX_MONTHS).contains(&months) => Ok(months),
            Some(_) => Err(AppError::BadRequest(format!(
                "months must be 1 to {}",
                usage::MAX_MONTHS
            ))),
        }
    }

    fn by_node(&self) -> Result<bool, AppError> {
        match self.by.as_deref() {
            None | Some("class") => Ok(false),
            Some("node") => Ok(true),
            Some(other) => Err(AppError::BadRequest(format!(
                "by must be class or node, not {other:?}"
            ))),
        }
    }
}

/// A CSV download named `name`.
fn csv_file(name: &str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

async fn class_json(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Query(query): Query<DaysQuery>,
) -> Result<Json<ClassUsage>, ApiError> {
    let days = query.days()?;
    Ok(Json(
        usage::class_usage(&state, &user.viewer, id, days).await?,
    ))
}

async fn site_json(
    State(state): State<Arc<HubState>>,
    _admin: RequireAdmin,
    Query(query): Query<SiteQuery>,
) -> Result<Json<SiteUsage>, ApiError> {
    let months = query.months()?;
    Ok(Json(usage::site_usage(&state, months).await?))
}

pub(in crate::web) fn api_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/usage", get(class_json))
        .route("/usage", get(site_json))
}

/// The class page's data: the report and its chart.
#[derive(Debug, serde::Serialize)]
struct ClassPage {
    #[serde(flatten)]
    report: ClassUsage,
    chart: String,
}

async fn class_page(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
    Query(query): Query<DaysQuery>,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let days = query.days()?;
    let report = usage::class_usage(&state, &user.viewer, id, days).await?;
    let title = format!("Usage of {}", report.class_name);
    Ok(Page::render(
        "pages/classes/usage.html",
        &Layout::new(Some(&user), &headers, "classes", &title),
        &ClassPage {
            chart: report.chart(),
            report,
        },
    )?)
}

async fn class_csv(
    State(state): State<Arc<HubState>>,
    user: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let report = usage::class_usage(&state, &user.viewer, id, usage::DEFAULT_DAYS).await?;
    Ok(csv_file(
        &format!("class-{id}-usage.csv"),
        usage::csv::class_report(&report),
    ))
}

/// One table of the site page: by class or by node.
#[derive(Debug, serde::Serialize)]
struct SiteTable {
    title: &'static str,
    by: &'static str,
    lines: Vec<usage::UsageLine>,
}

/// The site page's data: the months, its tables and its chart.
#[derive(Debug, serde::Serialize)]
struct SitePage {
    months: Vec<String>,
    time_zone: String,
    tables: [SiteTable; 2],
    chart: String,
}

async fn site_page(
    State(state): State<Arc<HubState>>,
    RequireAdmin(user): RequireAdmin,
    Query(query): Query<SiteQuery>,
    headers: HeaderMap,
) -> Result<Page, PageError> {
    let months = query.months()?;
    let report = usage::site_usage(&state, months).await?;
    let totals: Vec<usage::chart::Bar> = report
        .months
        .iter()
        .enumerate()
        .map(|(index, month)| usage::chart::Bar {
            label: month.clone(),
            value: report
                .by_node
                .iter()
                .map(|line| line.hours.get(index).copied().unwrap_or(0.0))
                .sum(),
        })
        .collect();
    let chart = usage::chart::bars(
        &format!("Hours run per month, last {months} months"),
        "h",
        &totals,
    );
    Ok(Page::render(
        "pages/admin/usage.html",
        &Layout::new(Some(&user), &headers, "usage", "Usage"),
        &SitePage {
            tables: [
                SiteTable {
                    title: "By class",
                    by: "class",
                    lines: report.by_class,
                },
                SiteTable {
                    title: "By node",
                    by: "node",
                    lines: report.by_node,
                },
            ],
            months: report.months,
            time_zone: report.time_zone,
            chart,
        },
    )?)
}

async fn site_csv(
    State(state): State<Arc<HubState>>,
    _admin: RequireAdmin,
    Query(query): Query<SiteQuery>,
) -> Result<Response, PageError> {
    let (months, by_node) = (query.months()?, query.by_node()?);
    let report = usage::site_usage(&state, months).await?;
    let name = if by_node {
        "usage-by-node.csv"
    } else {
        "usage-by-class.csv"
    };
    Ok(csv_file(name, usage::csv::site_report(&report, by_node)))
}

pub(in crate::web) fn page_router() -> Router<Arc<HubState>> {
    Router::new()
        .route("/classes/{id}/usage", get(class_page))
        .route("/classes/{id}/usage.csv", get(class_csv))
        .route("/admin/usage", get(site_page))
        .route("/admin/usage.csv", get(site_csv))
}
