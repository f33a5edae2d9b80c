//! The OpenAPI 3 document, generated from the handlers' annotations and the answer types.

use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::{badge, data, model, routes, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "scorecard-fleet api",
        description = "OpenSSF Scorecard results kept fresh by scorecard-fleet; `GET /projects/...` and its badge match the public Scorecard API."
    ),
    paths(
        routes::project,
        routes::badge_svg,
        routes::history,
        routes::scan,
        routes::ranking,
        routes::status,
        routes::index,
        routes::search,
        routes::openapi,
        data::stats,
        data::index,
        data::file,
        webhooks::create,
        webhooks::list,
        webhooks::show,
        webhooks::delete,
        webhooks::ping,
        webhooks::deliveries,
    ),
    components(schemas(
        model::ScorecardResult,
        model::RepoRef,
        model::ScorecardRef,
        model::CheckResult,
        model::Documentation,
        model::ApiError,
        model::History,
        model::HistoryScan,
        model::Ranking,
        model::RankedRepo,
        model::Status,
        model::ScanAccepted,
        badge::Style,
        webhooks::CreateWebhook,
        webhooks::Webhook,
        webhooks::CreatedWebhook,
        webhooks::WebhookList,
        webhooks::PingQueued,
        webhooks::DeliveryLog,
        webhooks::DeliveryAttempt,
    )),
    modifiers(&Bearer)
)]
struct Doc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON.
pub fn json() -> String {
    Doc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
