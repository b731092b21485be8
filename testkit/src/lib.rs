//! GlucoGuard's test tools: local stand-ins for the services GlucoGuard talks to, which real
//! clients use unchanged. Today: [`eventhubs`], a local Azure Event Hubs endpoint.

pub mod eventhubs;
