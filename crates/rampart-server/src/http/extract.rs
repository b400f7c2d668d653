//! The handlers' extractors: axum's `Path` and `Query`, with their
//! rejections turned into the crate's [`Error`] so that a bad
//! percent-encoding or an undecodable query string is answered like every
//! other error (JSON `{error, code, detail}`), not with axum's text/plain.

use axum::extract::{FromRequestParts, Path as AxumPath, Query as AxumQuery};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Path parameters; a rejection is [`Error::BadPath`].
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match AxumPath::<T>::from_request_parts(parts, state).await {
            Ok(AxumPath(value)) => Ok(Path(value)),
            // axum's message may quote the segment; error.rs bounds every detail.
            Err(rejection) => Err(Error::BadPath(rejection.body_text())),
        }
    }
}

/// Query parameters; a rejection is [`Error::BadQuery`].
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match AxumQuery::<T>::from_request_parts(parts, state).await {
            Ok(AxumQuery(value)) => Ok(Query(value)),
            Err(rejection) => Err(Error::BadQuery(rejection.body_text())),
        }
    }
}
