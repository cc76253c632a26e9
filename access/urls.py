"""Routes of the access app: applicant pages, /review/, public pages and /api/v1/."""

from django.urls import path

from access import apis
from access.views import applicant, public, review

app_name = "access"

urlpatterns = [
    # Researchers
    path("access/", applicant.my_access, name="my_access"),
    path("apply/", applicant.apply, name="apply"),
    path("access/applications/<int:pk>/", applicant.application_detail, name="application_detail"),
    path("access/applications/<int:pk>/withdraw", applicant.application_withdraw_view, name="application_withdraw"),
    path("access/applications/<int:pk>/submit", applicant.application_submit_view, name="application_submit"),
    path("access/applications/<int:pk>/respond", applicant.application_respond_view, name="application_respond"),
    path("access/licences/<slug:release_slug>/", applicant.licence_accept_page, name="licence_accept"),
    path("access/grants/<int:pk>/renew", applicant.grant_renew_view, name="grant_renew"),
    path("access/tokens/", applicant.tokens, name="tokens"),
    path("access/tokens/<int:pk>/revoke", applicant.token_revoke, name="token_revoke"),
    # Public
    path("access/reference/<str:token>/", public.reference_respond, name="reference_respond"),
    path("transparency/", public.transparency, name="transparency"),
    # Reviewers
    path("review/", review.review_queue, name="review_queue"),
    path("review/bulk", review.review_bulk, name="review_bulk"),
    path("review/applications/<int:pk>/", review.review_detail, name="review_detail"),
    path("review/applications/<int:pk>/decide", review.review_decide, name="review_decide"),
    path("review/applications/<int:pk>/assign", review.review_assign, name="review_assign"),
    path("review/applications/<int:pk>/notes", review.review_note, name="review_note"),
    path("review/grants/<int:pk>/revoke", review.review_grant_revoke, name="review_grant_revoke"),
    path("review/export/<slug:release_slug>.<str:fmt>", review.review_export, name="review_export"),
    # API
    path("api/v1/applications/", apis.ApplicationListCreateApi.as_view(), name="api_applications"),
    path("api/v1/applications/<int:pk>/", apis.ApplicationDetailApi.as_view(), name="api_application"),
    path("api/v1/applications/<int:pk>/withdraw", apis.ApplicationWithdrawApi.as_view(),
         name="api_application_withdraw"),
    path("api/v1/applications/<int:pk>/submit", apis.ApplicationSubmitApi.as_view(), name="api_application_submit"),
    path("api/v1/applications/<int:pk>/respond", apis.ApplicationRespondApi.as_view(),
         name="api_application_respond"),
    path("api/v1/grants/", apis.GrantListApi.as_view(), name="api_grants"),
    path("api/v1/review/applications/", apis.ReviewApplicationListApi.as_view(), name="api_review_applications"),
    path("api/v1/review/applications/<int:pk>/approve", apis.ReviewApproveApi.as_view(), name="api_review_approve"),
    path("api/v1/review/applications/<int:pk>/reject", apis.ReviewRejectApi.as_view(), name="api_review_reject"),
    path("api/v1/review/applications/<int:pk>/request-info", apis.ReviewRequestInfoApi.as_view(),
         name="api_review_request_info"),
]
