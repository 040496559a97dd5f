//! The frame of the OpenAPI 3.1 document: title, description, tags, security schemes and the
//! shared error responses ([`super::responses`]). The paths come from the router itself
//! ([`super::routes`]), where each handler is registered together with its `#[utoipa::path]`
//! documentation, so a route cannot be served undocumented or documented unserved.

use super::responses::{BadRequest, Forbidden, NotReady, RateLimited, RunState, TooLarge, Unauthorized};
use herald_protocol::ApiError;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// What the document says besides its paths; [`super::routes`] adds every route to it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Real-time gateway for AI-agent run events: the publisher HTTP API (backend → Herald), \
the AG-UI bridge and the client streams. Every error has the body `{\"error\":{\"code\",\"message\"}}`. \
See docs/protocol.md for the WebSocket protocol and docs/agui.md for the AG-UI bridge.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(
        schemas(ApiError, herald_protocol::publish::ApiErrorBody),
        responses(BadRequest, Unauthorized, Forbidden, RunState, TooLarge, RateLimited, NotReady)
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "publish", description = "Backends publish agent events (API key)."),
        (name = "stream", description = "Browsers and apps read a user's events (JWT or ticket)."),
        (name = "operator", description = "Operators act on users and see every node (API key or admin token)."),
        (name = "operations", description = "Health, metrics and this document (no auth)."),
    )
)]
pub struct ApiDoc;

/// Adds the security schemes the paths name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A publisher API key (HERALD_API_KEY; comma-separated keys rotate): \
                         `Authorization: Bearer <API key>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token (HERALD_ADMIN_TOKEN): operator routes and /admin only, \
                         no publishing. `Authorization: Bearer <admin token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's JWT (`sub` is the user id), signed as docs/security.md says.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "ticket",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from POST /v1/tickets, for browsers that cannot set headers.",
            ))),
        );
    }
}
