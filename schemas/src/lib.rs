//! The shared language of the ranking platform: identifiers with Personalize's limits,
//! the interaction record, the domain events on the bus, and the Personalize schemas
//! that infra deploys as they are.

pub mod events;
pub mod ids;
pub mod interaction;
pub mod personalize;
pub mod pipeline;
pub mod ses;

pub use events::{DetailType, DomainEvent, EmailAddress, EventEnvelope, EventError, ParsedEvent};
pub use ids::{IdError, ItemId, MAX_ID_CHARS, USER_ID_PATTERN, UserId};
pub use interaction::{EventId, EventType, Interaction, InteractionError, Timestamp};
pub use pipeline::PipelineRequest;
