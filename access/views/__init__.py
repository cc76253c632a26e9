"""HTML views of the access app: applicant pages, the reviewer queue, public pages."""
