"""Tests against software we did not write: SIPp, baresip, Kamailio (marker ``peer``)."""
