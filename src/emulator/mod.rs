//! The strict local emulator of the Entra ID, Graph and Partner Center endpoints. Shares no types with `partner_center`.
