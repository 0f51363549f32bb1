"""Dev and demo sandbox: a local FHIR server runner (and later a SMART authorization server and EHR simulator)."""
