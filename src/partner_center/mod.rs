//! The client module: Entra ID sign-in, Microsoft Graph and Partner Center REST. Shares no types with `emulator`.
