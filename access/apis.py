"""The access REST API (DRF): thin views that parse, look up in selectors, call one service."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from access import selectors
from access.errors import AccessError
from access.forms import QueueFilterForm
from access.http import client_ip, user_agent, validation_errors
from access.models import Application
from access.permissions import IsReviewer
from access.schema import error_responses
from access.serializers import (
    ApplicationDetailSerializer, ApplicationInputSerializer, ApplicationSerializer, GrantSerializer, ReasonInputSerializer,
    RespondInputSerializer, ReviewApplicationPageSerializer, ReviewApplicationSerializer, SubmitInputSerializer,
    review_page_size,
)
from access.services import applications as application_services
from portal.keyset import CursorInvalid, keyset_page


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def run_service(function, **kwargs):
    """Call a service, turning its refusals into 400 (fields), 403 or 409 answers."""
    try:
        return function(**kwargs)
    except DjangoValidationError as error:
        raise exceptions.ValidationError(validation_errors(error)) from None
    except AccessError as error:
        raise Conflict(str(error)) from None


def own_application(request, pk) -> Application:
    try:
        return selectors.application_of(user=request.user, pk=pk)
    except Application.DoesNotExist:
        raise Http404 from None


class ApplicationListCreateApi(APIView):
    @extend_schema(responses=ApplicationSerializer(many=True), summary="Your applications, newest first")
    def get(self, request):
        return Response(ApplicationSerializer(selectors.applications_of(user=request.user), many=True).data)

    @extend_schema(request=ApplicationInputSerializer,
                   responses={201: ApplicationSerializer(many=True), **error_responses(409)},
                   summary="Apply for one or more releases (one application each)")
    def post(self, request):
        serializer = ApplicationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        slugs = data.pop("releases")
        releases = list(selectors.releases_open_for_application().filter(slug__in=slugs))
        missing = sorted(set(slugs) - {release.slug for release in releases})
        if missing:
            raise exceptions.ValidationError({"releases": [f"Unknown release: {slug}." for slug in missing]})
        created = run_service(
            application_services.application_create, user=request.user, releases=releases, fields=data,
            submit=not data.pop("draft"), accept_licence=data.pop("accept_licence"),
            signature_name=data.pop("signature_name"), ip_address=client_ip(request), user_agent=user_agent(request),
        )
        return Response(ApplicationSerializer(created, many=True).data, status=status.HTTP_201_CREATED)


class ApplicationDetailApi(APIView):
    @extend_schema(responses=ApplicationDetailSerializer, summary="One of your applications, and where it stands")
    def get(self, request, pk: int):
        return Response(ApplicationDetailSerializer(own_application(request, pk)).data)


class ApplicationWithdrawApi(APIView):
    @extend_schema(request=None, responses={200: ApplicationSerializer, **error_responses(400, 409)},
                   summary="Withdraw one of your applications")
    def post(self, request, pk: int):
        application = run_service(application_services.application_withdraw,
                                  application=own_application(request, pk), by=request.user,
                                  ip_address=client_ip(request))
        return Response(ApplicationSerializer(application).data)


class ApplicationSubmitApi(APIView):
    @extend_schema(request=SubmitInputSerializer, responses={200: ApplicationSerializer, **error_responses(409)},
                   summary="Submit a draft")
    def post(self, request, pk: int):
        serializer = SubmitInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        application = run_service(application_services.application_submit,
                                  application=own_application(request, pk), by=request.user,
                                  ip_address=client_ip(request), user_agent=user_agent(request),
                                  **serializer.validated_data)
        return Response(ApplicationSerializer(application).data)


class ApplicationRespondApi(APIView):
    @extend_schema(request=RespondInputSerializer, responses={200: ApplicationSerializer, **error_responses(409)},
                   summary="Answer a reviewer's request for information")
    def post(self, request, pk: int):
        serializer = RespondInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        application = run_service(application_services.application_respond,
                                  application=own_application(request, pk), by=request.user,
                                  response=serializer.validated_data["response"], ip_address=client_ip(request))
        return Response(ApplicationSerializer(application).data)


class GrantListApi(APIView):
    @extend_schema(responses=GrantSerializer(many=True), summary="Your grants (access to releases)")
    def get(self, request):
        return Response(GrantSerializer(selectors.grants_of(user=request.user), many=True).data)


class ReviewApplicationListApi(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        parameters=[OpenApiParameter(name, str, description=description) for name, description in [
            ("status", "submitted, in_review, needs_info, approved, rejected, withdrawn, decided "
                       "(default: submitted and in_review)"),
            ("release", "release slug"), ("country", "ISO 3166 code"),
            ("signal", "vetting signal code that is not green (e.g. embargo, email_domain)"),
            ("age", "overdue, within_sla or today"), ("assigned", "me or none"),
            ("cursor", "the page after or before another, as its next and previous links give it")]],
        responses={200: ReviewApplicationPageSerializer, **error_responses(400)},
        summary="The review queue, oldest first, a page at a time (follow next and previous)",
    )
    def get(self, request):
        filter_form = QueueFilterForm(request.query_params)
        if not filter_form.is_valid():
            raise exceptions.ValidationError({field: list(errors) for field, errors in filter_form.errors.items()})
        queue = selectors.review_queue(reviewer=request.user, **filter_form.filters())
        try:
            page = keyset_page(queue, time_field="submitted_at", cursor=request.query_params.get("cursor", ""),
                               size=review_page_size())
        except CursorInvalid as error:
            raise exceptions.ValidationError({"cursor": [str(error)]}) from None
        url = request.build_absolute_uri()
        return Response({
            "next": replace_query_param(url, "cursor", page.next_cursor) if page.next_cursor else None,
            "previous": replace_query_param(url, "cursor", page.previous_cursor) if page.previous_cursor else None,
            "results": ReviewApplicationSerializer(page.rows, many=True, context={"now": timezone.now()}).data,
        })


def _review_action(function):
    class ReviewActionApi(APIView):
        permission_classes = [IsReviewer]

        @extend_schema(request=ReasonInputSerializer,
                       responses={200: ReviewApplicationSerializer, **error_responses(409)})
        def post(self, request, pk: int):
            serializer = ReasonInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            try:
                application = selectors.application_for_review(pk=pk)
            except Application.DoesNotExist:
                raise Http404 from None
            run_service(function, application=application, by=request.user,
                        reason=serializer.validated_data["reason"], ip_address=client_ip(request))
            return Response(ReviewApplicationSerializer(selectors.application_for_review(pk=pk)).data)

    ReviewActionApi.__name__ = ReviewActionApi.__qualname__ = (
        "Review" + function.__name__.title().replace("_", "") + "Api")
    return ReviewActionApi


ReviewApproveApi = _review_action(application_services.application_approve)
ReviewRejectApi = _review_action(application_services.application_reject)
ReviewRequestInfoApi = _review_action(application_services.application_request_info)
